//! Loads SecLang directives into an [`Engine`]: rules per phase, markers, defaults, settings.
//!
//! One file per step of loading a rule:
//! - [`directives`]: SecLang directives (includes, settings, defaults, removals, updates);
//! - [`rule`]: a `SecRule`/`SecAction` built from its parts, with its phase and defaults;
//! - [`targets`]: variables and macros;
//! - [`operators`]: the operator and its compiled matchers;
//! - [`actions`]: `setvar` and `ctl`;
//! - [`finish`]: updates applied, rules planned (memo slots, target lists) into the [`Engine`].

mod actions;
mod directives;
mod finish;
mod operators;
mod rule;
mod targets;

pub use directives::glob_match;
pub use targets::parse_macro;

use directives::{dir_of, parse_ranges};
use rule::parse_phase;

use crate::model::*;
use crate::ops::{self, HostMatch, Op, Pm, RxOp};
use crate::parse::{self, Directive, LoadError, Loc, RawAction};
use crate::transform::T;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Where rule files and data files come from (the host, or the filesystem in tests).
pub trait FileSource {
    /// Every readable file (absolute paths).
    fn list(&self) -> Vec<String>;
    /// Contents of one file.
    fn read(&self, path: &str) -> Result<Vec<u8>, String>;
}

/// What the body limit does when exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitAction {
    /// Answer 413.
    Reject,
    /// Inspect the first `limit` bytes.
    ProcessPartial,
}

/// Engine settings from configuration directives.
#[derive(Clone, Debug)]
pub struct Settings {
    /// SecRuleEngine
    pub mode: Mode,
    /// SecRequestBodyAccess
    pub body_access: bool,
    /// SecRequestBodyLimit
    pub body_limit: usize,
    /// SecRequestBodyNoFilesLimit
    pub body_nofiles_limit: usize,
    /// SecRequestBodyLimitAction
    pub body_limit_action: LimitAction,
    /// SecRequestBodyJsonDepthLimit
    pub json_depth: usize,
    /// SecArgumentsLimit
    pub args_limit: usize,
    /// SecArgumentSeparator
    pub arg_sep: u8,
    /// Status for deny without `status:`.
    pub default_status: u16,
    /// SecUnicodeMapFile: what `urlDecodeUni` maps `%uXXXX` code points to.
    pub unicode_map: Option<Rc<crate::unicode_map::UnicodeMap>>,
    /// SecResponseBodyAccess
    pub resp_body_access: bool,
    /// SecResponseBodyLimit
    pub resp_body_limit: usize,
    /// SecResponseBodyLimitAction
    pub resp_body_limit_action: LimitAction,
    /// SecResponseBodyMimeType (lowercase media types, no parameters).
    pub resp_mime: Vec<String>,
    /// SecCollectionTimeout: seconds a persistent collection's record lives after its
    /// last change.
    pub collection_timeout: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::On,
            body_access: true,
            body_limit: 13_107_200,
            body_nofiles_limit: 131_072,
            body_limit_action: LimitAction::Reject,
            json_depth: 512,
            args_limit: 1000,
            arg_sep: b'&',
            default_status: 403,
            unicode_map: None,
            // ModSecurity's defaults
            resp_body_access: false,
            resp_body_limit: 524_288,
            resp_body_limit_action: LimitAction::Reject,
            resp_mime: vec!["text/plain".into(), "text/html".into()],
            collection_timeout: 3600,
        }
    }
}

/// An entry of a phase's rule list.
#[derive(Clone, Debug)]
pub enum Entry {
    /// Index into [`Engine::rules`]; the second field is the resolved skipAfter target (entry index of the marker).
    Rule(usize, Option<usize>),
    /// A SecMarker.
    Marker(Rc<str>),
}

#[derive(Clone, Debug, Default)]
struct Defaults {
    disruptive: Option<Disr>,
    log: Option<bool>,
    status: Option<u16>,
    transforms: Vec<T>,
}

/// One target of a shared target list with the exclusions that can remove its values:
/// what [`Engine::tlist_segs`] index.
#[derive(Clone, Debug)]
pub struct Segment {
    /// The target.
    pub target: Target,
    /// The list's exclusions of the target's variable.
    pub excl: Box<[Excl]>,
}

/// A phase entry's rule as a possible known miss: with a shared target list and a memo
/// slot, the rule is a known miss when its list's word `word` has `bit` (`tx::misses`).
#[derive(Clone, Copy, Debug)]
pub struct MissEntry {
    /// The rule's target list (`Rule::tlist`); [`MissEntry::NONE`] for an entry that is not
    /// such a rule.
    pub list: u32,
    /// `Rule::memo_word`.
    pub word: u32,
    /// The rule's memo slot's bit in that word.
    pub bit: u64,
}

impl MissEntry {
    /// `list` of an entry that cannot be a known miss.
    pub const NONE: u32 = u32::MAX;
}

/// A compiled rule set.
pub struct Engine {
    /// Top-level rules in load order.
    pub rules: Vec<Rule>,
    /// Per phase (index 1..=5) the ordered entries.
    pub phases: [Vec<Entry>; 6],
    /// Settings.
    pub settings: Settings,
    /// Default disruptive action per phase (for `block`).
    pub default_disr: [Disr; 6],
    /// Number of interned transformation chains.
    pub n_tchains: u32,
    /// Host matchers (when enabled).
    pub host: Option<Rc<dyn HostMatch>>,
    /// Counts for reports: rx on regex::bytes / fancy / on host, pm on host.
    pub stats: Stats,
    /// Literal prefilter over the prefilterable `@rx` rules.
    pub prefilter: Option<crate::prefilter::Prefilter>,
    /// Operator misses remembered across requests.
    pub memo: std::cell::RefCell<crate::memo::Memo>,
    /// Input values recently made (`Transaction::intern`), shared by every transaction of
    /// this engine (the ones a VM runs at once included); trusted only on equal bytes.
    pub intern: std::cell::RefCell<Vec<Option<std::rc::Rc<[u8]>>>>,
    /// Results of transformation chains kept across transactions (`crate::tcache`).
    pub chain_cache: std::cell::RefCell<crate::tcache::ChainCache>,
    /// Per interned target list: how its last known-miss checks went, across transactions
    /// (`tx::misses::Hint`): a list that keeps holding a value never seen before is not
    /// checked on every request.
    pub list_hints: std::cell::RefCell<Vec<u8>>,
    /// Number of interned cacheable target lists (`Rule::tlist`).
    pub n_tlists: u32,
    /// Per interned target list: the words of the memo's bit rows that hold the slots of the
    /// rules using it (`Rule::memo / 64`, sorted). Only those words of a list's
    /// "every value misses" bits are ever read, so only they are computed.
    pub tlist_words: Vec<Box<[u32]>>,
    /// Per interned target list: its segments (indices into [`Engine::segments`]), one per
    /// target. A transaction collects each segment's values once a phase, however many
    /// lists share it, to tell which rules are known misses (`tx::misses`).
    pub tlist_segs: Vec<Box<[u32]>>,
    /// The distinct segments of the target lists: one target with the exclusions that name
    /// its variable (the only ones `collect` asks about it).
    pub segments: Vec<Segment>,
    /// Per phase, per entry: its rule as a possible known miss.
    pub miss_entries: [Box<[MissEntry]>; 6],
    /// Key selectors rules use on TX (regex, prefix, substring): a transaction counts the
    /// TX keys each matches, so a selector that matches none skips the walk.
    pub tx_selectors: Rc<[Sel]>,
    /// TX keys rules name literally -> their slot in a transaction's TX map
    /// (`crate::tx::tx_slots`): those keys are found by index, not by hashing their bytes.
    pub tx_slots: Rc<crate::hash::FxMap<Rc<[u8]>, u32>>,
}

/// Load statistics.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Rules with an id (top level).
    pub rules: usize,
    /// Chained sub-rules.
    pub chained: usize,
    /// @rx compiled with regex::bytes.
    pub rx_bytes: usize,
    /// @rx compiled with fancy-regex.
    pub rx_fancy: usize,
    /// matchers compiled by the host.
    pub host_matchers: usize,
    /// Files read.
    pub files: Vec<String>,
    /// `@rx` rules behind the literal prefilter.
    pub prefiltered: usize,
    /// Problems that do not stop loading (the filter logs them at configure).
    pub warnings: Vec<String>,
}

struct RawRule {
    loc: Loc,
    targets: Option<String>,
    op: Option<String>,
    actions: Vec<RawAction>,
}

/// Builds an engine.
pub struct Loader<'a> {
    src: &'a dyn FileSource,
    host: Option<Rc<dyn HostMatch>>,
    settings: Settings,
    defaults: [Defaults; 6],
    rules: Vec<Rule>,
    order: Vec<Item>,
    chain_stack: Vec<RawRule>,
    removals: Vec<Removal>,
    updates: Vec<(Loc, IdRanges, String)>,
    tchains: HashMap<Vec<T>, u32>,
    rx_cache: HashMap<String, Rc<RxOp>>,
    pm_cache: HashMap<Vec<Vec<u8>>, Rc<Pm>>,
    ids: HashMap<u32, Loc>,
    stats: Stats,
    depth: usize,
    pf: crate::prefilter::Builder,
    pf_cache: HashMap<String, Option<Vec<Vec<u8>>>>,
}

enum Item {
    Rule(usize),
    Marker(Rc<str>),
}

enum Removal {
    Id(IdRanges),
    Tag(String),
    Msg(String),
}

fn err(loc: &Loc, msg: impl Into<String>) -> LoadError {
    LoadError {
        loc: loc.clone(),
        msg: msg.into(),
    }
}

impl<'a> Loader<'a> {
    /// A loader reading files from `src`, compiling matchers on `host` too when given.
    pub fn new(src: &'a dyn FileSource, host: Option<Rc<dyn HostMatch>>) -> Self {
        let mut defaults: [Defaults; 6] = Default::default();
        for d in defaults.iter_mut() {
            d.disruptive = Some(Disr::Pass);
            d.log = Some(true);
        }
        Loader {
            src,
            host,
            settings: Settings::default(),
            defaults,
            rules: Vec::new(),
            order: Vec::new(),
            chain_stack: Vec::new(),
            removals: Vec::new(),
            updates: Vec::new(),
            tchains: HashMap::new(),
            rx_cache: HashMap::new(),
            pm_cache: HashMap::new(),
            ids: HashMap::new(),
            stats: Stats::default(),
            depth: 0,
            pf: crate::prefilter::Builder::default(),
            pf_cache: HashMap::new(),
        }
    }

    /// Loads one file from the source.
    pub fn load_file(&mut self, path: &str) -> Result<(), LoadError> {
        let loc = Loc {
            file: Rc::from(path),
            line: 0,
        };
        let data = self
            .src
            .read(path)
            .map_err(|e| err(&loc, format!("cannot read rule file: {e}")))?;
        let text = String::from_utf8_lossy(&data);
        self.stats.files.push(path.to_string());
        self.load_text(path, &text)
    }

    /// Loads SecLang text (`file` names it in errors and resolves relative data files).
    pub fn load_text(&mut self, file: &str, text: &str) -> Result<(), LoadError> {
        for d in parse::directives(file, text)? {
            self.directive(d)?;
        }
        if let Some(r) = self.chain_stack.first() {
            return Err(err(&r.loc, "chain without a following rule at end of file"));
        }
        Ok(())
    }

    /// Settings, for the config layer to override (mode, status, limits).
    pub fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }
}
