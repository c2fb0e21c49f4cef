//! The compiled rule model: variables, targets, macros, actions, rules.

use crate::ops::Op;
use crate::parse::Loc;
use crate::transform::T;
use std::rc::Rc;

/// Scalar variables (one value each), by index into this table.
pub const SCALARS: &[&str] = &[
    "REQUEST_URI",
    "REQUEST_URI_RAW",
    "REQUEST_FILENAME",
    "REQUEST_BASENAME",
    "REQUEST_LINE",
    "REQUEST_METHOD",
    "REQUEST_PROTOCOL",
    "QUERY_STRING",
    "REQUEST_BODY",
    "REQUEST_BODY_LENGTH",
    "ARGS_COMBINED_SIZE",
    "FILES_COMBINED_SIZE",
    "REQBODY_ERROR",
    "REQBODY_ERROR_MSG",
    "REQBODY_PROCESSOR",
    "REQBODY_PROCESSOR_ERROR",
    "REQBODY_PROCESSOR_ERROR_MSG",
    "UNIQUE_ID",
    "DURATION",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "REMOTE_HOST",
    "SERVER_NAME",
    "SERVER_ADDR",
    "SERVER_PORT",
    "FULL_REQUEST_LENGTH",
    "URLENCODED_ERROR",
    "INBOUND_DATA_ERROR",
    "OUTBOUND_DATA_ERROR",
    "HIGHEST_SEVERITY",
    "MULTIPART_STRICT_ERROR",
    "MULTIPART_UNMATCHED_BOUNDARY",
    "MULTIPART_BOUNDARY_QUOTED",
    "MULTIPART_BOUNDARY_WHITESPACE",
    "MULTIPART_DATA_BEFORE",
    "MULTIPART_DATA_AFTER",
    "MULTIPART_HEADER_FOLDING",
    "MULTIPART_LF_LINE",
    "MULTIPART_CRLF_LF_LINES",
    "MULTIPART_MISSING_SEMICOLON",
    "MULTIPART_INVALID_QUOTING",
    "MULTIPART_INVALID_PART",
    "MULTIPART_INVALID_HEADER_FOLDING",
    "MULTIPART_FILE_LIMIT_EXCEEDED",
    "AUTH_TYPE",
    "PATH_INFO",
    "STATUS_LINE",
    "WEBAPPID",
    "SESSIONID",
    "USERID",
    "RESPONSE_STATUS",
    "RESPONSE_PROTOCOL",
    "RESPONSE_CONTENT_TYPE",
    "RESPONSE_CONTENT_LENGTH",
    "RESPONSE_BODY",
];

/// Index of a scalar by name.
pub fn scalar(name: &str) -> Option<u8> {
    SCALARS.iter().position(|s| *s == name).map(|p| p as u8)
}

/// Scalar indices used by the engine.
pub mod s {
    #![allow(missing_docs)]
    pub const REQUEST_URI: u8 = 0;
    pub const REQUEST_URI_RAW: u8 = 1;
    pub const REQUEST_FILENAME: u8 = 2;
    pub const REQUEST_BASENAME: u8 = 3;
    pub const REQUEST_LINE: u8 = 4;
    pub const REQUEST_METHOD: u8 = 5;
    pub const REQUEST_PROTOCOL: u8 = 6;
    pub const QUERY_STRING: u8 = 7;
    pub const REQUEST_BODY: u8 = 8;
    pub const REQUEST_BODY_LENGTH: u8 = 9;
    pub const ARGS_COMBINED_SIZE: u8 = 10;
    pub const FILES_COMBINED_SIZE: u8 = 11;
    pub const REQBODY_ERROR: u8 = 12;
    pub const REQBODY_ERROR_MSG: u8 = 13;
    pub const REQBODY_PROCESSOR: u8 = 14;
    pub const REQBODY_PROCESSOR_ERROR: u8 = 15;
    pub const REQBODY_PROCESSOR_ERROR_MSG: u8 = 16;
    pub const UNIQUE_ID: u8 = 17;
    pub const DURATION: u8 = 18;
    pub const REMOTE_ADDR: u8 = 19;
    pub const REMOTE_PORT: u8 = 20;
    pub const FULL_REQUEST_LENGTH: u8 = 25;
    pub const MULTIPART_STRICT_ERROR: u8 = 30;
    pub const MULTIPART_UNMATCHED_BOUNDARY: u8 = 31;
    pub const MULTIPART_BOUNDARY_QUOTED: u8 = 32;
    pub const MULTIPART_DATA_BEFORE: u8 = 34;
    pub const MULTIPART_DATA_AFTER: u8 = 35;
    pub const MULTIPART_LF_LINE: u8 = 37;
    pub const MULTIPART_MISSING_SEMICOLON: u8 = 39;
    pub const MULTIPART_INVALID_QUOTING: u8 = 40;
    pub const MULTIPART_INVALID_PART: u8 = 41;
    pub const OUTBOUND_DATA_ERROR: u8 = 28;
    pub const STATUS_LINE: u8 = 46;
    pub const RESPONSE_STATUS: u8 = 50;
    pub const RESPONSE_PROTOCOL: u8 = 51;
    pub const RESPONSE_CONTENT_TYPE: u8 = 52;
    pub const RESPONSE_CONTENT_LENGTH: u8 = 53;
    pub const RESPONSE_BODY: u8 = 54;
}

/// Keyed collections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Coll {
    /// ARGS (GET then POST)
    Args,
    /// ARGS_GET
    ArgsGet,
    /// ARGS_POST
    ArgsPost,
    /// REQUEST_HEADERS
    Headers,
    /// REQUEST_COOKIES
    Cookies,
    /// FILES (field name -> file name)
    Files,
    /// FILES_SIZES
    FilesSizes,
    /// MULTIPART_PART_HEADERS
    PartHeaders,
    /// RESPONSE_HEADERS (phases 3 and 4)
    RespHeaders,
    /// TX
    Tx,
    /// IP, GLOBAL, SESSION, USER, RESOURCE
    Persist(u8),
    /// GEO, ENV, ... (always empty here)
    Empty,
}

/// Names of persistent collections (kept across requests once `initcol` names a record;
/// see `crate::persist`).
pub const PERSIST: &[&str] = &["IP", "GLOBAL", "SESSION", "USER", "RESOURCE"];

/// A variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum V {
    /// Values of a collection.
    Values(Coll),
    /// Keys of a collection (`ARGS_NAMES`, `FILES_NAMES`, ...).
    Names(Coll),
    /// A scalar (index into [`SCALARS`]).
    Scalar(u8),
    /// MATCHED_VAR
    MatchedVar,
    /// MATCHED_VAR_NAME
    MatchedVarName,
    /// MATCHED_VARS
    MatchedVars,
    /// MATCHED_VARS_NAMES
    MatchedVarsNames,
    /// `XML:/*` (text content of the root element)
    XmlText,
    /// `XML://@*` (each attribute value)
    XmlAttrs,
    /// An unavailable variable (`TIME*`, ...): never has a value here.
    Nothing,
}

/// How a target or exclusion selects keys.
#[derive(Clone, Debug)]
pub enum Sel {
    /// Every key.
    All,
    /// One key (lowercased; compared case-insensitively).
    Key(Vec<u8>),
    /// Keys matching a regex.
    Re(Rc<regex::bytes::Regex>),
    /// Keys starting with (lowercase) bytes: a `/^literal/` regex, matched without the regex engine.
    Prefix(Vec<u8>),
    /// Keys containing (lowercase) bytes: a `/literal/` regex.
    Contains(Vec<u8>),
}

/// ASCII case-insensitive substring test (`needle` lowercase).
fn contains_nocase(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    if needle.len() > hay.len() {
        return false;
    }
    for i in 0..=hay.len() - needle.len() {
        if hay[i].to_ascii_lowercase() == first
            && hay[i + 1..i + needle.len()].eq_ignore_ascii_case(rest)
        {
            return true;
        }
    }
    false
}

/// Turns simple key regexes (`^header_name_`, `paramcounter_.*`, `__utm`) into literal selectors.
pub fn simple_key_regex(re: &str) -> Option<Sel> {
    let (anchored, mut r) = match re.strip_prefix('^') {
        Some(x) => (true, x),
        None => (false, re),
    };
    if let Some(x) = r.strip_suffix(".*") {
        r = x;
    } else if let Some(x) = r.strip_suffix('*') {
        // `X*`: X optional, drop it
        let mut cs = x.chars();
        cs.next_back()?;
        r = cs.as_str();
    }
    if r.is_empty()
        || !r
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return None;
    }
    let lit = r.to_ascii_lowercase().into_bytes();
    Some(if anchored {
        Sel::Prefix(lit)
    } else {
        Sel::Contains(lit)
    })
}

impl Sel {
    /// Does `key` match?
    #[inline]
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            Sel::All => true,
            Sel::Key(k) => k.eq_ignore_ascii_case(key),
            Sel::Re(r) => r.is_match(key),
            Sel::Prefix(p) => key.len() >= p.len() && key[..p.len()].eq_ignore_ascii_case(p),
            Sel::Contains(c) => contains_nocase(key, c),
        }
    }
}

/// One entry of a rule's variable list.
#[derive(Clone, Debug)]
pub struct Target {
    /// Which variable.
    pub var: V,
    /// Key selector.
    pub sel: Sel,
    /// `&VAR`: the number of values.
    pub count: bool,
    /// Display name (`ARGS`, `TX`, ...).
    pub name: Rc<str>,
    /// `TX:key`: the key's slot in the TX map (set at configure by `tx::tx_slots`), else
    /// `tx::NO_SLOT`.
    pub tx_slot: u32,
}

/// A `!VAR:key` exclusion.
#[derive(Clone, Debug)]
pub struct Excl {
    /// Variable it applies to.
    pub var: V,
    /// Keys excluded.
    pub sel: Sel,
}

impl Excl {
    /// Does this exclusion remove value `key` of variable `var`?
    #[inline]
    pub fn hits(&self, var: V, key: &[u8]) -> bool {
        self.var == var && self.sel.matches(key)
    }
}

/// Rule fields usable in macros (`%{rule.id}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleField {
    /// rule.id
    Id,
    /// rule.msg
    Msg,
    /// rule.severity
    Severity,
    /// rule.logdata
    Logdata,
    /// rule.ver / rev / others: empty
    Other,
}

/// A piece of a macro string.
#[derive(Clone, Debug)]
pub enum Part {
    /// Literal bytes (shared: a literal `setvar` value is stored without a copy).
    Lit(std::rc::Rc<[u8]>),
    /// A variable's first value (`%{tx.x}`, `%{MATCHED_VAR}`, `%{request_headers.host}`).
    ///
    /// The third field: a `%{tx.key}`'s slot in the TX map (set at configure by
    /// `tx::tx_slots`), else `tx::NO_SLOT`.
    Var(V, Option<Vec<u8>>, u32),
    /// A field of the current rule.
    Rule(RuleField),
}

/// A string with `%{...}` macros.
#[derive(Clone, Debug, Default)]
pub struct Macro {
    /// The pieces.
    pub parts: Vec<Part>,
}

impl Macro {
    /// `Some(bytes)` if the macro has no variable parts.
    pub fn literal(&self) -> Option<&[u8]> {
        match self.parts.as_slice() {
            [] => Some(b""),
            [Part::Lit(l)] => Some(&l[..]),
            _ => None,
        }
    }
}

/// Which collection a `setvar` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetColl {
    /// TX
    Tx,
    /// IP/GLOBAL/... (index into [`PERSIST`])
    Persist(u8),
}

/// The `setvar` operation.
#[derive(Clone, Debug)]
pub enum SetOp {
    /// `=value`
    Set(Macro),
    /// `=+value`
    Add(Macro),
    /// `=-value`
    Sub(Macro),
    /// `!name`
    Del,
    /// `initcol:COLL=KEY` (and `setsid`, `setuid`, `setrsc`): loads the collection's
    /// record named by the expanded key (the `SetVar`'s name is empty).
    Init(Macro),
    /// `expirevar:COLL.name=SECONDS`
    Expire(Macro),
    /// `deprecatevar:COLL.name=N/SECONDS`: lowers a counter by N per SECONDS since the
    /// record's last update.
    Deprecate(Macro),
}

/// A `setvar` action.
#[derive(Clone, Debug)]
pub struct SetVar {
    /// Collection.
    pub coll: SetColl,
    /// Variable name (may contain macros).
    pub name: Macro,
    /// Operation.
    pub op: SetOp,
    /// A TX name without macros: its slot in the TX map (set at configure by
    /// `tx::tx_slots`), else `tx::NO_SLOT`.
    pub slot: u32,
}

/// Rule engine mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Evaluate and enforce.
    On,
    /// Evaluate, log, never disrupt.
    DetectionOnly,
    /// Do not evaluate.
    Off,
}

impl Mode {
    /// Parses `On` / `Off` / `DetectionOnly`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s.to_ascii_lowercase().as_str() {
            "on" => Some(Mode::On),
            "off" => Some(Mode::Off),
            "detectiononly" => Some(Mode::DetectionOnly),
            _ => None,
        }
    }
}

/// Request body processors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyProc {
    /// application/x-www-form-urlencoded
    UrlEncoded,
    /// multipart/form-data
    Multipart,
    /// JSON
    Json,
    /// XML
    Xml,
}

impl BodyProc {
    /// ModSecurity's name (`REQBODY_PROCESSOR`).
    pub fn name(self) -> &'static str {
        match self {
            BodyProc::UrlEncoded => "URLENCODED",
            BodyProc::Multipart => "MULTIPART",
            BodyProc::Json => "JSON",
            BodyProc::Xml => "XML",
        }
    }
}

/// Rule id ranges (`ruleRemoveById=1-5`).
pub type IdRanges = Vec<(u32, u32)>;

/// A `ctl:` action.
#[derive(Clone, Debug)]
pub enum Ctl {
    /// ruleRemoveById
    RemoveById(IdRanges),
    /// ruleRemoveByTag
    RemoveByTag(String),
    /// ruleRemoveTargetById
    RemoveTargetById(IdRanges, Excl),
    /// ruleRemoveTargetByTag
    RemoveTargetByTag(String, Excl),
    /// ruleEngine
    Engine(Mode),
    /// requestBodyProcessor
    BodyProcessor(BodyProc),
    /// forceRequestBodyVariable
    ForceBodyVar(bool),
    /// requestBodyAccess
    BodyAccess(bool),
    /// responseBodyAccess
    ResponseBodyAccess(bool),
    /// auditEngine, auditLogParts, debugLogLevel...: accepted, no effect.
    Ignored,
}

/// Disruptive actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disr {
    /// pass
    Pass,
    /// deny
    Deny,
    /// drop (answered like deny)
    Drop,
    /// allow (stop evaluating this transaction's request phases)
    Allow,
    /// block: the phase's SecDefaultAction decides
    Block,
}

/// A rule (SecRule or SecAction); chained rules hang off `chain`.
#[derive(Debug)]
pub struct Rule {
    /// `id:` (0 for chained rules and internal rules).
    pub id: u32,
    /// Phase 1..=5.
    pub phase: u8,
    /// Source location.
    pub loc: Loc,
    /// Variables.
    pub targets: Vec<Target>,
    /// `!` exclusions.
    pub excl: Vec<Excl>,
    /// Operator.
    pub op: Op,
    /// `!@op`
    pub negated: bool,
    /// Interned transformation-chain id (for the per-request cache).
    pub tchain: u32,
    /// Transformations, in order.
    pub transforms: Rc<[T]>,
    /// multiMatch
    pub multi_match: bool,
    /// capture
    pub capture: bool,
    /// setvar actions, in order.
    pub setvars: Vec<SetVar>,
    /// ctl actions, in order.
    pub ctls: Vec<Ctl>,
    /// Disruptive action (resolved `block` is kept as Block; resolved at run time).
    pub disruptive: Option<Disr>,
    /// `status:`
    pub status: Option<u16>,
    /// log / nolog (after defaults).
    pub log: bool,
    /// msg
    pub msg: Option<Macro>,
    /// logdata
    pub logdata: Option<Macro>,
    /// tags
    pub tags: Vec<Rc<str>>,
    /// severity 0..=7
    pub severity: Option<u8>,
    /// skipAfter marker
    pub skip_after: Option<String>,
    /// skip:N
    pub skip: u32,
    /// Next rule of the chain.
    pub chain: Option<Box<Rule>>,
    /// Metrics category (from `attack-*` tag or id family).
    pub category: Rc<str>,
    /// Literal-prefilter slot (non-negated `@rx` with required literals).
    pub pf: Option<u32>,
    /// Memo slot: the operator's answer depends only on the value (see [`crate::memo`]).
    pub memo: Option<u32>,
    /// Interned (targets, exclusions) list whose values cannot change within a phase: the
    /// per-phase cache of collected values is shared by every rule with the same list.
    pub tlist: Option<u32>,
    /// With a list and a memo slot: where the list's "every value misses" words
    /// (`tx::misses`) hold this rule's slot, the index of `memo / 64` in the list's
    /// `Engine::tlist_words`.
    pub memo_word: u32,
}

impl Rule {
    /// This rule and the rules chained after it, in order.
    pub fn links(&self) -> impl Iterator<Item = &Rule> {
        std::iter::successors(Some(self), |r| r.chain.as_deref())
    }

    /// Has tag `t` (exact, case-insensitive)?
    pub fn has_tag(&self, t: &str) -> bool {
        self.tags.iter().any(|x| x.eq_ignore_ascii_case(t))
    }
}

/// Is `id` in any of the ranges?
pub fn in_ranges(r: &[(u32, u32)], id: u32) -> bool {
    r.iter().any(|&(a, b)| id >= a && id <= b)
}

/// Display name of a variable (for MATCHED_VAR_NAME).
pub fn var_name(v: V) -> &'static str {
    match v {
        V::Values(c) => coll_name(c),
        V::Names(c) => match c {
            Coll::Args => "ARGS_NAMES",
            Coll::ArgsGet => "ARGS_GET_NAMES",
            Coll::ArgsPost => "ARGS_POST_NAMES",
            Coll::Headers => "REQUEST_HEADERS_NAMES",
            Coll::Cookies => "REQUEST_COOKIES_NAMES",
            Coll::Files => "FILES_NAMES",
            Coll::RespHeaders => "RESPONSE_HEADERS_NAMES",
            _ => "NAMES",
        },
        V::Scalar(i) => SCALARS[i as usize],
        V::MatchedVar => "MATCHED_VAR",
        V::MatchedVarName => "MATCHED_VAR_NAME",
        V::MatchedVars => "MATCHED_VARS",
        V::MatchedVarsNames => "MATCHED_VARS_NAMES",
        V::XmlText | V::XmlAttrs => "XML",
        V::Nothing => "",
    }
}

/// Display name of a collection.
pub fn coll_name(c: Coll) -> &'static str {
    match c {
        Coll::Args => "ARGS",
        Coll::ArgsGet => "ARGS_GET",
        Coll::ArgsPost => "ARGS_POST",
        Coll::Headers => "REQUEST_HEADERS",
        Coll::Cookies => "REQUEST_COOKIES",
        Coll::Files => "FILES",
        Coll::FilesSizes => "FILES_SIZES",
        Coll::PartHeaders => "MULTIPART_PART_HEADERS",
        Coll::RespHeaders => "RESPONSE_HEADERS",
        Coll::Tx => "TX",
        Coll::Persist(i) => PERSIST[i as usize],
        Coll::Empty => "",
    }
}

/// Parses a variable name (upper or lower case) into a variable.
pub fn parse_var(name: &str) -> Option<V> {
    let up = name.to_ascii_uppercase();
    Some(match up.as_str() {
        "ARGS" => V::Values(Coll::Args),
        "ARGS_GET" => V::Values(Coll::ArgsGet),
        "ARGS_POST" => V::Values(Coll::ArgsPost),
        "ARGS_NAMES" => V::Names(Coll::Args),
        "ARGS_GET_NAMES" => V::Names(Coll::ArgsGet),
        "ARGS_POST_NAMES" => V::Names(Coll::ArgsPost),
        "REQUEST_HEADERS" => V::Values(Coll::Headers),
        "REQUEST_HEADERS_NAMES" => V::Names(Coll::Headers),
        "REQUEST_COOKIES" => V::Values(Coll::Cookies),
        "REQUEST_COOKIES_NAMES" => V::Names(Coll::Cookies),
        "FILES" => V::Values(Coll::Files),
        "FILES_NAMES" => V::Names(Coll::Files),
        "FILES_SIZES" => V::Values(Coll::FilesSizes),
        "MULTIPART_PART_HEADERS" => V::Values(Coll::PartHeaders),
        "TX" => V::Values(Coll::Tx),
        "MATCHED_VAR" => V::MatchedVar,
        "MATCHED_VAR_NAME" => V::MatchedVarName,
        "MATCHED_VARS" => V::MatchedVars,
        "MATCHED_VARS_NAMES" => V::MatchedVarsNames,
        "XML" => V::XmlText,
        "RESPONSE_HEADERS" => V::Values(Coll::RespHeaders),
        "RESPONSE_HEADERS_NAMES" => V::Names(Coll::RespHeaders),
        "GEO" | "ENV" | "FILES_TMPNAMES" | "FILES_TMP_CONTENT" | "MULTIPART_FILENAME"
        | "MULTIPART_NAME" | "RULE" => V::Values(Coll::Empty),
        "TIME" | "TIME_DAY" | "TIME_EPOCH" | "TIME_HOUR" | "TIME_MIN" | "TIME_MON" | "TIME_SEC"
        | "TIME_WDAY" | "TIME_YEAR" | "REQUEST_URI_RAW_" | "USERAGENT_IP" | "AUTH_TYPE_" => {
            V::Nothing
        }
        _ => {
            if let Some(p) = PERSIST.iter().position(|p| *p == up) {
                V::Values(Coll::Persist(p as u8))
            } else {
                V::Scalar(scalar(&up)?)
            }
        }
    })
}
