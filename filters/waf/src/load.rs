//! Loads SecLang directives into an [`Engine`]: rules per phase, markers, defaults, settings.

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
    /// Number of interned cacheable target lists (`Rule::tlist`).
    pub n_tlists: u32,
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

/// Glob match with `*`, `?` and `[...]`-free patterns (enough for rule file lists).
pub fn glob_match(pat: &str, s: &str) -> bool {
    let (p, s) = (pat.as_bytes(), s.as_bytes());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

fn dir_of(file: &str) -> &str {
    match file.rfind('/') {
        Some(p) => &file[..p + 1],
        None => "",
    }
}

fn parse_ranges(s: &str) -> Result<IdRanges, String> {
    let mut out = Vec::new();
    for part in s.split([' ', ',']).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: u32 = a
            .trim()
            .parse()
            .map_err(|_| format!("bad rule id {part:?}"))?;
        let b: u32 = b
            .trim()
            .parse()
            .map_err(|_| format!("bad rule id {part:?}"))?;
        out.push((a, b));
    }
    Ok(out)
}

fn parse_severity(v: &str) -> Option<u8> {
    if let Ok(n) = v.parse::<u8>() {
        return (n <= 7).then_some(n);
    }
    let names = [
        "EMERGENCY",
        "ALERT",
        "CRITICAL",
        "ERROR",
        "WARNING",
        "NOTICE",
        "INFO",
        "DEBUG",
    ];
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(v))
        .map(|p| p as u8)
}

fn parse_phase(v: &str) -> Option<u8> {
    match v.to_ascii_lowercase().as_str() {
        "1" => Some(1),
        "2" | "request" => Some(2),
        "3" => Some(3),
        "4" | "response" => Some(4),
        "5" | "logging" => Some(5),
        _ => None,
    }
}

/// Parses a macro string (`%{tx.x}`).
pub fn parse_macro(s: &str) -> Result<Macro, String> {
    let mut parts = Vec::new();
    let mut lit = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && b.get(i + 1) == Some(&b'{') {
            if let Some(end) = s[i + 2..].find('}') {
                let inner = &s[i + 2..i + 2 + end];
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(macro_part(inner)?);
                i += 2 + end + 1;
                continue;
            }
        }
        lit.push(b[i]);
        i += 1;
    }
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    Ok(Macro { parts })
}

fn macro_part(inner: &str) -> Result<Part, String> {
    let (name, key) = match inner.split_once(['.', ':']) {
        Some((n, k)) => (n, Some(k)),
        None => (inner, None),
    };
    if name.eq_ignore_ascii_case("rule") {
        let f = match key.unwrap_or("").to_ascii_lowercase().as_str() {
            "id" => RuleField::Id,
            "msg" => RuleField::Msg,
            "severity" => RuleField::Severity,
            "logdata" => RuleField::Logdata,
            _ => RuleField::Other,
        };
        return Ok(Part::Rule(f));
    }
    let v = parse_var(name).ok_or_else(|| format!("unknown variable in macro %{{{inner}}}"))?;
    Ok(Part::Var(
        v,
        key.map(|k| k.to_ascii_lowercase().into_bytes()),
    ))
}

fn category_of(id: u32, tags: &[Rc<str>]) -> Rc<str> {
    for t in tags {
        if let Some(c) = t.strip_prefix("attack-") {
            return Rc::from(c.replace('-', "_"));
        }
    }
    let c = match id / 1000 {
        911 => "method",
        913 => "scanner",
        920 | 921 => "protocol",
        930 => "lfi",
        931 => "rfi",
        932 => "rce",
        933 => "php",
        934 => "generic",
        941 => "xss",
        942 => "sqli",
        943 => "fixation",
        944 => "java",
        949 | 959 => "blocking",
        _ => "other",
    };
    Rc::from(c)
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

    fn directive(&mut self, d: Directive) -> Result<(), LoadError> {
        let loc = &d.loc;
        let arg = |n: usize| -> Result<&str, LoadError> {
            d.args
                .get(n)
                .map(String::as_str)
                .ok_or_else(|| err(loc, format!("{} needs an argument", d.name)))
        };
        let onoff = |v: &str| -> Result<bool, LoadError> {
            match v.to_ascii_lowercase().as_str() {
                "on" => Ok(true),
                "off" => Ok(false),
                _ => Err(err(
                    loc,
                    format!("{}: expected On or Off, got {v:?}", d.name),
                )),
            }
        };
        let size = |v: &str| -> Result<usize, LoadError> {
            v.parse::<usize>()
                .map_err(|_| err(loc, format!("{}: expected a number, got {v:?}", d.name)))
        };
        match d.name.as_str() {
            "SecRule" => {
                if d.args.len() < 2 || d.args.len() > 3 {
                    return Err(err(loc, "SecRule needs VARIABLES OPERATOR [ACTIONS]"));
                }
                let actions = parse::actions(d.args.get(2).map(String::as_str).unwrap_or(""))
                    .map_err(|e| err(loc, e))?;
                self.raw_rule(RawRule {
                    loc: d.loc.clone(),
                    targets: Some(d.args[0].clone()),
                    op: Some(d.args[1].clone()),
                    actions,
                })?;
            }
            "SecAction" => {
                let actions = parse::actions(arg(0)?).map_err(|e| err(loc, e))?;
                self.raw_rule(RawRule {
                    loc: d.loc.clone(),
                    targets: None,
                    op: None,
                    actions,
                })?;
            }
            "SecMarker" => {
                self.check_no_chain(loc)?;
                self.order.push(Item::Marker(Rc::from(arg(0)?)));
            }
            "SecDefaultAction" => {
                let actions = parse::actions(arg(0)?).map_err(|e| err(loc, e))?;
                let mut def = Defaults::default();
                let mut phase = None;
                for a in &actions {
                    let v = a.value.as_deref().unwrap_or("");
                    match a.name.as_str() {
                        "phase" => {
                            phase = Some(
                                parse_phase(v)
                                    .ok_or_else(|| err(loc, format!("bad phase {v:?}")))?,
                            )
                        }
                        "pass" => def.disruptive = Some(Disr::Pass),
                        "deny" => def.disruptive = Some(Disr::Deny),
                        "drop" => def.disruptive = Some(Disr::Drop),
                        "allow" => def.disruptive = Some(Disr::Allow),
                        "block" => {}
                        "log" => def.log = Some(true),
                        "nolog" => def.log = Some(false),
                        "status" => {
                            def.status = Some(
                                v.parse()
                                    .map_err(|_| err(loc, format!("bad status {v:?}")))?,
                            )
                        }
                        "auditlog" | "noauditlog" | "tag" | "ver" | "severity" | "msg" => {}
                        "t" => {
                            if let Some(t) = T::parse(v).map_err(|e| err(loc, e))? {
                                def.transforms.push(t);
                            } else {
                                def.transforms.clear();
                            }
                        }
                        other => {
                            return Err(err(
                                loc,
                                format!("SecDefaultAction: unsupported action {other:?}"),
                            ))
                        }
                    }
                }
                let p = phase.ok_or_else(|| err(loc, "SecDefaultAction needs a phase"))?;
                if def.disruptive.is_none() {
                    def.disruptive = Some(Disr::Pass);
                }
                if def.log.is_none() {
                    def.log = Some(true);
                }
                self.defaults[p as usize] = def;
            }
            "SecRuleRemoveById" => {
                let r = parse_ranges(&d.args.join(" ")).map_err(|e| err(loc, e))?;
                self.removals.push(Removal::Id(r));
            }
            "SecRuleRemoveByTag" => self.removals.push(Removal::Tag(arg(0)?.to_string())),
            "SecRuleRemoveByMsg" => self.removals.push(Removal::Msg(arg(0)?.to_string())),
            "SecRuleUpdateTargetById" => {
                let r = parse_ranges(arg(0)?).map_err(|e| err(loc, e))?;
                self.updates.push((d.loc.clone(), r, arg(1)?.to_string()));
            }
            "SecRuleUpdateTargetByTag" => {
                let tag = arg(0)?.to_string();
                let targets = arg(1)?.to_string();
                self.updates
                    .push((d.loc.clone(), vec![], format!("\u{0}{tag}\u{0}{targets}")));
            }
            "SecRuleEngine" => {
                self.settings.mode = Mode::parse(arg(0)?)
                    .ok_or_else(|| err(loc, "SecRuleEngine: On, Off or DetectionOnly"))?
            }
            "SecRequestBodyAccess" => self.settings.body_access = onoff(arg(0)?)?,
            "SecRequestBodyLimit" => self.settings.body_limit = size(arg(0)?)?,
            "SecRequestBodyNoFilesLimit" => self.settings.body_nofiles_limit = size(arg(0)?)?,
            "SecRequestBodyInMemoryLimit" => {}
            "SecRequestBodyLimitAction" => {
                self.settings.body_limit_action = match arg(0)?.to_ascii_lowercase().as_str() {
                    "reject" => LimitAction::Reject,
                    "processpartial" => LimitAction::ProcessPartial,
                    v => {
                        return Err(err(
                            loc,
                            format!(
                                "SecRequestBodyLimitAction: Reject or ProcessPartial, got {v:?}"
                            ),
                        ))
                    }
                }
            }
            "SecRequestBodyJsonDepthLimit" => self.settings.json_depth = size(arg(0)?)?,
            "SecArgumentsLimit" => self.settings.args_limit = size(arg(0)?)?,
            "SecArgumentSeparator" => {
                let v = arg(0)?;
                if v.len() != 1 {
                    return Err(err(loc, "SecArgumentSeparator: one character"));
                }
                self.settings.arg_sep = v.as_bytes()[0];
            }
            "SecCookieFormat" => {
                if arg(0)? != "0" {
                    return Err(err(
                        loc,
                        "SecCookieFormat: only 0 (version 0 cookies) is supported",
                    ));
                }
            }
            "Include" => {
                let pat = arg(0)?;
                let full = if pat.starts_with('/') {
                    pat.to_string()
                } else {
                    format!("{}{}", dir_of(&loc.file), pat)
                };
                let mut files: Vec<String> = self
                    .src
                    .list()
                    .into_iter()
                    .filter(|f| glob_match(&full, f))
                    .collect();
                files.sort();
                if files.is_empty() {
                    return Err(err(
                        loc,
                        format!("Include {full}: no such file offered by the host"),
                    ));
                }
                if self.depth > 8 {
                    return Err(err(loc, "Include nested too deeply"));
                }
                self.depth += 1;
                for f in files {
                    self.load_file(&f)?;
                }
                self.depth -= 1;
            }
            // Accepted, no effect in a filter (documented in README.md):
            "SecPcreMatchLimit"
            | "SecPcreMatchLimitRecursion"
            | "SecResponseBodyAccess"
            | "SecResponseBodyMimeType"
            | "SecResponseBodyMimeTypesClear"
            | "SecResponseBodyLimit"
            | "SecResponseBodyLimitAction"
            | "SecTmpDir"
            | "SecDataDir"
            | "SecUploadDir"
            | "SecUploadKeepFiles"
            | "SecUploadFileMode"
            | "SecUploadFileLimit"
            | "SecAuditEngine"
            | "SecAuditLog"
            | "SecAuditLog2"
            | "SecAuditLogDirMode"
            | "SecAuditLogFileMode"
            | "SecAuditLogFormat"
            | "SecAuditLogParts"
            | "SecAuditLogRelevantStatus"
            | "SecAuditLogStorageDir"
            | "SecAuditLogType"
            | "SecDebugLog"
            | "SecDebugLogLevel"
            | "SecCollectionTimeout"
            | "SecComponentSignature"
            | "SecServerSignature"
            | "SecUnicodeMapFile"
            | "SecStatusEngine"
            | "SecTmpSaveUploadedFiles"
            | "SecWebAppId"
            | "SecRequestBodyJsonDepth"
            | "SecXmlExternalEntity"
            | "SecConnEngine" => {}
            other => return Err(err(loc, format!("unsupported directive {other}"))),
        }
        Ok(())
    }

    fn check_no_chain(&self, loc: &Loc) -> Result<(), LoadError> {
        if let Some(r) = self.chain_stack.first() {
            return Err(err(
                loc,
                format!(
                    "rule at {} has `chain` but no chained SecRule follows",
                    r.loc
                ),
            ));
        }
        Ok(())
    }

    fn raw_rule(&mut self, r: RawRule) -> Result<(), LoadError> {
        let chains = r.actions.iter().any(|a| a.name == "chain");
        if r.targets.is_none() && !self.chain_stack.is_empty() {
            return Err(err(&r.loc, "SecAction cannot be chained"));
        }
        self.chain_stack.push(r);
        if chains {
            return Ok(());
        }
        let stack = std::mem::take(&mut self.chain_stack);
        let mut built: Option<Box<Rule>> = None;
        let n = stack.len();
        let mut phase = 2;
        // phase comes from the chain starter
        for a in &stack[0].actions {
            if a.name == "phase" {
                let v = a.value.as_deref().unwrap_or("");
                phase =
                    parse_phase(v).ok_or_else(|| err(&stack[0].loc, format!("bad phase {v:?}")))?;
            }
        }
        for (i, raw) in stack.into_iter().enumerate().rev() {
            let mut rule = self.build_rule(raw, i == 0, phase)?;
            rule.chain = built.take();
            if i > 0 {
                self.stats.chained += 1;
            }
            built = Some(Box::new(rule));
            let _ = n;
        }
        let rule = *built.expect("non-empty chain");
        if rule.id != 0 {
            if let Some(prev) = self.ids.get(&rule.id) {
                return Err(err(
                    &rule.loc,
                    format!("duplicate rule id {} (first at {prev})", rule.id),
                ));
            }
            self.ids.insert(rule.id, rule.loc.clone());
        }
        self.stats.rules += 1;
        self.rules.push(rule);
        self.order.push(Item::Rule(self.rules.len() - 1));
        Ok(())
    }

    fn intern(&mut self, t: &[T]) -> u32 {
        let n = self.tchains.len() as u32;
        *self.tchains.entry(t.to_vec()).or_insert(n)
    }

    /// Parses one target (`!ARGS:foo`, `&TX:x`, `ARGS:/re/`, `XML:/*`).
    fn target(&self, s: &str) -> Result<(bool, Target), String> {
        let (excl, s) = match s.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (count, s) = match s.strip_prefix('&') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (name, key) = match s.split_once(':') {
            Some((n, k)) => (n, Some(k)),
            None => (s, None),
        };
        let mut var = parse_var(name).ok_or_else(|| format!("unsupported variable {name}"))?;
        let sel = match key {
            None => Sel::All,
            Some(k) if var == V::XmlText => {
                var = match k {
                    "/*" => V::XmlText,
                    "//@*" => V::XmlAttrs,
                    _ => {
                        return Err(format!(
                            "unsupported XPath {k:?} (only XML:/* and XML://@*)"
                        ))
                    }
                };
                Sel::All
            }
            Some(k) if k.len() >= 2 && k.starts_with('/') && k.ends_with('/') => {
                let pat = format!("(?i){}", &k[1..k.len() - 1]);
                let tr = crate::pcre::translate(&pat, false);
                let re =
                    regex::bytes::Regex::new(&tr).map_err(|e| format!("bad key regex {k}: {e}"))?;
                crate::model::simple_key_regex(&k[1..k.len() - 1]).unwrap_or(Sel::Re(Rc::new(re)))
            }
            Some(k) => Sel::Key(parse::unquote(k).to_ascii_lowercase().into_bytes()),
        };
        if matches!(var, V::Scalar(_) | V::MatchedVar | V::MatchedVarName)
            && !matches!(sel, Sel::All)
        {
            // ModSecurity tolerates keys on scalars; ignore the key.
        }
        Ok((
            excl,
            Target {
                var,
                sel,
                count,
                name: Rc::from(name.to_ascii_uppercase()),
            },
        ))
    }

    fn rx_op(&mut self, pat: &str) -> Result<Rc<RxOp>, String> {
        if let Some(r) = self.rx_cache.get(pat) {
            return Ok(r.clone());
        }
        let rx = ops::compile_rx(pat)?;
        let mut host = None;
        match &rx {
            ops::Rx::Bytes(r) => {
                self.stats.rx_bytes += 1;
                if let Some(h) = &self.host {
                    host = h.compile_rx(r.as_str());
                    if host.is_some() {
                        self.stats.host_matchers += 1;
                    }
                }
            }
            ops::Rx::Fancy(_) => self.stats.rx_fancy += 1,
        }
        let op = Rc::new(RxOp { rx, host });
        self.rx_cache.insert(pat.to_string(), op.clone());
        Ok(op)
    }

    fn pm_op(&mut self, words: Vec<Vec<u8>>) -> Result<Rc<Pm>, String> {
        if let Some(p) = self.pm_cache.get(&words) {
            return Ok(p.clone());
        }
        let ac = ops::compile_pm(&words)?;
        let mut host = None;
        if let Some(h) = &self.host {
            host = h.compile_pm(&words);
            if host.is_some() {
                self.stats.host_matchers += 1;
            }
        }
        let p = Rc::new(Pm { ac, host });
        self.pm_cache.insert(words, p.clone());
        Ok(p)
    }

    fn operator(&mut self, loc: &Loc, s: &str) -> Result<(Op, bool), LoadError> {
        let (neg, s) = match s.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (name, arg) = if let Some(r) = s.strip_prefix('@') {
            match r.split_once(|c: char| c.is_ascii_whitespace()) {
                Some((n, a)) => (n, a.trim_start()),
                None => (r, ""),
            }
        } else {
            ("rx", s)
        };
        let m = |a: &str| parse_macro(a).map_err(|e| err(loc, e));
        let op = match name {
            "rx" => {
                let mac = m(arg)?;
                if mac.literal().is_some() {
                    Op::Rx(self.rx_op(arg).map_err(|e| err(loc, format!("@rx: {e}")))?)
                } else {
                    Op::RxMacro(mac, RefCell::new(Vec::new()))
                }
            }
            "pm" => {
                let words: Vec<Vec<u8>> = arg
                    .split_ascii_whitespace()
                    .map(|w| w.as_bytes().to_vec())
                    .collect();
                if words.is_empty() {
                    return Err(err(loc, "@pm needs words"));
                }
                Op::Pm(self.pm_op(words).map_err(|e| err(loc, e))?)
            }
            "pmFromFile" | "pmf" => {
                let mut words = Vec::new();
                for f in arg.split_ascii_whitespace() {
                    let path = if f.starts_with('/') {
                        f.to_string()
                    } else {
                        format!("{}{}", dir_of(&loc.file), f)
                    };
                    let data = self
                        .src
                        .read(&path)
                        .map_err(|e| err(loc, format!("@pmFromFile {path}: {e}")))?;
                    for line in data.split(|&b| b == b'\n') {
                        let line = line.trim_ascii();
                        if line.is_empty() || line.starts_with(b"#") {
                            continue;
                        }
                        words.push(line.to_vec());
                    }
                }
                if words.is_empty() {
                    return Err(err(loc, "@pmFromFile: no phrases"));
                }
                Op::Pm(self.pm_op(words).map_err(|e| err(loc, e))?)
            }
            "streq" => Op::StrEq(m(arg)?),
            "contains" => Op::Contains(m(arg)?),
            "containsWord" => Op::ContainsWord(m(arg)?),
            "beginsWith" => Op::BeginsWith(m(arg)?),
            "endsWith" => Op::EndsWith(m(arg)?),
            "within" => Op::Within(m(arg)?),
            "eq" => Op::Eq(m(arg)?),
            "ge" => Op::Ge(m(arg)?),
            "gt" => Op::Gt(m(arg)?),
            "lt" => Op::Lt(m(arg)?),
            "le" => Op::Le(m(arg)?),
            "validateByteRange" => {
                Op::ValidateByteRange(ops::byte_range(arg).map_err(|e| err(loc, e))?)
            }
            "validateUrlEncoding" => Op::ValidateUrlEncoding,
            "validateUtf8Encoding" => Op::ValidateUtf8Encoding,
            "ipMatch" => {
                let mut list = Vec::new();
                for a in arg.split([',', ' ']).filter(|a| !a.is_empty()) {
                    list.push(
                        ops::Cidr::parse(a)
                            .ok_or_else(|| err(loc, format!("@ipMatch: bad address {a:?}")))?,
                    );
                }
                Op::IpMatch(list)
            }
            "detectSQLi" => Op::DetectSqli,
            "detectXSS" => Op::DetectXss,
            "unconditionalMatch" => Op::Unconditional,
            "noMatch" | "geoLookup" | "rbl" => Op::NoMatch,
            other => return Err(err(loc, format!("unsupported operator @{other}"))),
        };
        Ok((op, neg))
    }

    fn build_rule(&mut self, raw: RawRule, starter: bool, phase: u8) -> Result<Rule, LoadError> {
        let loc = raw.loc.clone();
        let mut targets = Vec::new();
        let mut excl = Vec::new();
        if let Some(t) = &raw.targets {
            for v in parse::split_vars(t) {
                let (is_excl, tg) = self.target(&v).map_err(|e| err(&loc, e))?;
                if is_excl {
                    excl.push(Excl {
                        var: tg.var,
                        sel: tg.sel,
                    });
                } else {
                    targets.push(tg);
                }
            }
        } else {
            targets.push(Target {
                var: V::Nothing,
                sel: Sel::All,
                count: false,
                name: Rc::from(""),
            });
        }
        let (op, negated) = match &raw.op {
            Some(o) => self.operator(&loc, o)?,
            None => (Op::Unconditional, false),
        };
        let defaults = self.defaults[phase as usize].clone();
        let mut rule = Rule {
            id: 0,
            phase,
            loc: loc.clone(),
            targets,
            excl,
            op,
            negated,
            tchain: 0,
            memo: None,
            tlist: None,
            transforms: Rc::from(Vec::new()),
            multi_match: false,
            capture: false,
            setvars: Vec::new(),
            ctls: Vec::new(),
            disruptive: None,
            status: None,
            log: defaults.log.unwrap_or(true),
            msg: None,
            logdata: None,
            tags: Vec::new(),
            severity: None,
            skip_after: None,
            skip: 0,
            chain: None,
            category: Rc::from("other"),
            pf: None,
        };
        let mut transforms = defaults.transforms.clone();
        let mut log_set = false;
        let mut noaudit = false;
        for a in &raw.actions {
            let v = a.value.as_deref().unwrap_or("");
            let need = || -> Result<&str, LoadError> {
                a.value
                    .as_deref()
                    .ok_or_else(|| err(&loc, format!("action {} needs a value", a.name)))
            };
            match a.name.as_str() {
                "id" => {
                    if starter {
                        rule.id = need()?
                            .trim()
                            .parse()
                            .map_err(|_| err(&loc, format!("bad id {v:?}")))?;
                    }
                }
                "phase" => {}
                "chain" => {}
                "msg" => rule.msg = Some(parse_macro(v).map_err(|e| err(&loc, e))?),
                "logdata" => rule.logdata = Some(parse_macro(v).map_err(|e| err(&loc, e))?),
                "tag" => rule.tags.push(Rc::from(v)),
                "severity" => {
                    rule.severity = Some(
                        parse_severity(v)
                            .ok_or_else(|| err(&loc, format!("bad severity {v:?}")))?,
                    )
                }
                "capture" => rule.capture = true,
                "multiMatch" => rule.multi_match = true,
                "t" => match T::parse(v).map_err(|e| err(&loc, e))? {
                    Some(t) => transforms.push(t),
                    None => transforms.clear(),
                },
                "setvar" => rule.setvars.push(self.setvar(&loc, need()?)?),
                "ctl" => rule.ctls.push(self.ctl(&loc, need()?)?),
                "skipAfter" => rule.skip_after = Some(need()?.to_string()),
                "skip" => {
                    rule.skip = v
                        .parse()
                        .map_err(|_| err(&loc, format!("bad skip {v:?}")))?
                }
                "pass" => rule.disruptive = Some(Disr::Pass),
                "deny" => rule.disruptive = Some(Disr::Deny),
                "drop" => rule.disruptive = Some(Disr::Drop),
                "allow" => rule.disruptive = Some(Disr::Allow),
                "block" => rule.disruptive = Some(Disr::Block),
                "status" => {
                    rule.status = Some(
                        v.parse()
                            .map_err(|_| err(&loc, format!("bad status {v:?}")))?,
                    )
                }
                "log" => {
                    rule.log = true;
                    log_set = true;
                }
                "nolog" => {
                    rule.log = false;
                    log_set = true;
                }
                "noauditlog" => noaudit = true,
                "auditlog"
                | "ver"
                | "rev"
                | "maturity"
                | "accuracy"
                | "initcol"
                | "expirevar"
                | "deprecatevar"
                | "setenv"
                | "sanitiseArg"
                | "sanitiseMatched"
                | "sanitiseMatchedBytes"
                | "sanitiseRequestHeader"
                | "sanitiseResponseHeader"
                | "xmlns"
                | "setuid"
                | "setsid"
                | "setrsc" => {}
                other => return Err(err(&loc, format!("unsupported action {other}"))),
            }
        }
        let _ = log_set;
        // The audit line lists what ModSecurity's audit log would: logged, not `noauditlog`.
        rule.log &= !noaudit;
        if !starter && rule.disruptive.is_some() {
            rule.disruptive = None;
        }
        if starter && rule.status.is_none() && matches!(rule.disruptive, Some(Disr::Block) | None) {
            rule.status = defaults.status;
        }
        if let (Op::Rx(rx), false, false) = (&rule.op, rule.negated, rule.multi_match) {
            if let ops::Rx::Bytes(r) = &rx.rx {
                let pat = r.as_str().to_string();
                let lits = self
                    .pf_cache
                    .entry(pat.clone())
                    .or_insert_with(|| crate::prefilter::literals(&pat))
                    .clone();
                if let Some(l) = lits {
                    rule.pf = Some(self.pf.add(l));
                    self.stats.prefiltered += 1;
                }
            }
        }
        rule.tchain = self.intern(&transforms);
        rule.transforms = Rc::from(transforms);
        rule.category = category_of(rule.id, &rule.tags);
        Ok(rule)
    }

    fn setvar(&self, loc: &Loc, v: &str) -> Result<SetVar, LoadError> {
        let (del, v) = match v.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, v),
        };
        let (lhs, rhs) = match v.split_once('=') {
            Some((l, r)) => (l, Some(r)),
            None => (v, None),
        };
        let (coll, name) = lhs
            .split_once('.')
            .ok_or_else(|| err(loc, format!("setvar: expected COLLECTION.name in {v:?}")))?;
        let coll = if coll.eq_ignore_ascii_case("tx") {
            SetColl::Tx
        } else {
            let up = coll.to_ascii_uppercase();
            match PERSIST.iter().position(|p| *p == up) {
                Some(p) => SetColl::Persist(p as u8),
                None => return Err(err(loc, format!("setvar: unsupported collection {coll}"))),
            }
        };
        let name = parse_macro(&name.to_ascii_lowercase()).map_err(|e| err(loc, e))?;
        let op = if del {
            SetOp::Del
        } else {
            match rhs {
                None => SetOp::Set(parse_macro("1").map_err(|e| err(loc, e))?),
                Some(r) => {
                    if let Some(x) = r.strip_prefix('+') {
                        SetOp::Add(parse_macro(x).map_err(|e| err(loc, e))?)
                    } else if let Some(x) = r.strip_prefix('-') {
                        SetOp::Sub(parse_macro(x).map_err(|e| err(loc, e))?)
                    } else {
                        SetOp::Set(parse_macro(r).map_err(|e| err(loc, e))?)
                    }
                }
            }
        };
        Ok(SetVar { coll, name, op })
    }

    fn ctl(&self, loc: &Loc, v: &str) -> Result<Ctl, LoadError> {
        let (k, val) = v
            .split_once('=')
            .ok_or_else(|| err(loc, format!("ctl: expected name=value in {v:?}")))?;
        let target_excl = |t: &str| -> Result<Excl, LoadError> {
            let (_, tg) = self.target(t).map_err(|e| err(loc, e))?;
            Ok(Excl {
                var: tg.var,
                sel: tg.sel,
            })
        };
        Ok(match k {
            "ruleRemoveById" => Ctl::RemoveById(parse_ranges(val).map_err(|e| err(loc, e))?),
            "ruleRemoveByTag" => Ctl::RemoveByTag(val.to_string()),
            "ruleRemoveTargetById" => {
                let (ids, t) = val
                    .split_once(';')
                    .ok_or_else(|| err(loc, "ctl:ruleRemoveTargetById=ID;TARGET"))?;
                Ctl::RemoveTargetById(parse_ranges(ids).map_err(|e| err(loc, e))?, target_excl(t)?)
            }
            "ruleRemoveTargetByTag" => {
                let (tag, t) = val
                    .split_once(';')
                    .ok_or_else(|| err(loc, "ctl:ruleRemoveTargetByTag=TAG;TARGET"))?;
                Ctl::RemoveTargetByTag(tag.to_string(), target_excl(t)?)
            }
            "ruleEngine" => Ctl::Engine(
                Mode::parse(val).ok_or_else(|| err(loc, format!("ctl:ruleEngine {val:?}")))?,
            ),
            "requestBodyProcessor" => Ctl::BodyProcessor(match val.to_ascii_uppercase().as_str() {
                "URLENCODED" => BodyProc::UrlEncoded,
                "MULTIPART" => BodyProc::Multipart,
                "JSON" => BodyProc::Json,
                "XML" => BodyProc::Xml,
                _ => {
                    return Err(err(
                        loc,
                        format!("ctl:requestBodyProcessor {val:?} unsupported"),
                    ))
                }
            }),
            "forceRequestBodyVariable" => Ctl::ForceBodyVar(val.eq_ignore_ascii_case("on")),
            "requestBodyAccess" => Ctl::BodyAccess(val.eq_ignore_ascii_case("on")),
            "auditEngine" | "auditLogParts" | "debugLogLevel" | "hashEngine"
            | "hashEnforcement" => Ctl::Ignored,
            other => return Err(err(loc, format!("unsupported ctl:{other}"))),
        })
    }

    fn apply_updates(&mut self) -> Result<(), LoadError> {
        let updates = std::mem::take(&mut self.updates);
        for (loc, ranges, spec) in updates {
            let (tag, targets) = if let Some(rest) = spec.strip_prefix('\u{0}') {
                let (t, tg) = rest.split_once('\u{0}').unwrap_or((rest, ""));
                (Some(t.to_string()), tg.to_string())
            } else {
                (None, spec)
            };
            let mut parsed = Vec::new();
            for v in parse::split_vars(&targets) {
                parsed.push(self.target(&v).map_err(|e| err(&loc, e))?);
            }
            for r in self.rules.iter_mut() {
                let hit = match &tag {
                    Some(t) => r.has_tag(t),
                    None => in_ranges(&ranges, r.id),
                };
                if !hit {
                    continue;
                }
                for (is_excl, tg) in &parsed {
                    if *is_excl {
                        r.excl.push(Excl {
                            var: tg.var,
                            sel: tg.sel.clone(),
                        });
                    } else {
                        r.targets.push(tg.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// Finishes loading: applies removals/updates, lays out the phases, resolves skipAfter.
    pub fn finish(mut self) -> Result<Engine, LoadError> {
        if let Some(r) = self.chain_stack.first() {
            return Err(err(&r.loc, "chain without a following rule"));
        }
        self.apply_updates()?;
        let mut removed = vec![false; self.rules.len()];
        for (i, r) in self.rules.iter().enumerate() {
            for rm in &self.removals {
                let hit = match rm {
                    Removal::Id(rg) => r.id != 0 && in_ranges(rg, r.id),
                    Removal::Tag(t) => r.has_tag(t),
                    Removal::Msg(m) => {
                        r.msg.as_ref().and_then(|x| x.literal()) == Some(m.as_bytes())
                    }
                };
                if hit {
                    removed[i] = true;
                }
            }
        }
        let mut phases: [Vec<Entry>; 6] = Default::default();
        for it in &self.order {
            match it {
                Item::Rule(i) => {
                    if !removed[*i] {
                        phases[self.rules[*i].phase as usize].push(Entry::Rule(*i, None));
                    }
                }
                Item::Marker(m) => {
                    for p in phases.iter_mut().skip(1) {
                        p.push(Entry::Marker(m.clone()));
                    }
                }
            }
        }
        for list in phases.iter_mut() {
            let mut markers: HashMap<Rc<str>, usize> = HashMap::new();
            for (i, e) in list.iter().enumerate() {
                if let Entry::Marker(m) = e {
                    markers.entry(m.clone()).or_insert(i);
                }
            }
            let len = list.len();
            for (i, e) in list.iter_mut().enumerate() {
                if let Entry::Rule(r, target) = e {
                    if let Some(name) = &self.rules[*r].skip_after {
                        // the first marker of that name after this rule; else end of phase
                        let t = markers
                            .get(name.as_str())
                            .copied()
                            .filter(|&m| m > i)
                            .unwrap_or(len);
                        *target = Some(t);
                    }
                }
            }
        }
        let mut default_disr = [Disr::Pass; 6];
        for (i, d) in self.defaults.iter().enumerate() {
            default_disr[i] = d.disruptive.unwrap_or(Disr::Pass);
        }
        // After SecRuleUpdateTargetById: final targets.
        let (mut slots, mut lists) = (0u32, HashMap::new());
        for r in self.rules.iter_mut() {
            let mut cur = Some(r);
            while let Some(rule) = cur {
                plan_rule(rule, &mut slots, &mut lists);
                cur = rule.chain.as_deref_mut();
            }
        }
        Ok(Engine {
            rules: self.rules,
            phases,
            settings: self.settings,
            default_disr,
            n_tchains: self.tchains.len() as u32,
            host: self.host,
            stats: self.stats,
            prefilter: self.pf.build(),
            memo: std::cell::RefCell::new(crate::memo::Memo::new(slots)),
            n_tlists: lists.len() as u32,
        })
    }

    /// Settings, for the config layer to override (mode, status, limits).
    pub fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }
}

/// Does the operator's answer depend on its input alone (no macro, no state)?
fn op_pure(op: &Op) -> bool {
    match op {
        Op::RxMacro(..) | Op::Unconditional | Op::NoMatch => false,
        op => op.macro_arg().is_none_or(|m| m.literal().is_some()),
    }
}

/// Can the values of `v` change while a phase runs (TX, persistent collections, MATCHED_*)?
fn var_changes(v: V) -> bool {
    match v {
        V::Values(c) | V::Names(c) => matches!(c, Coll::Tx | Coll::Persist(_)),
        V::MatchedVar | V::MatchedVarName | V::MatchedVars | V::MatchedVarsNames | V::Nothing => {
            true
        }
        V::Scalar(_) | V::XmlText | V::XmlAttrs => false,
    }
}

/// Assigns a rule's memo slot and interned target list (see `Rule::memo`, `Rule::tlist`).
fn plan_rule(rule: &mut Rule, slots: &mut u32, lists: &mut HashMap<String, u32>) {
    if op_pure(&rule.op) {
        rule.memo = Some(*slots);
        *slots += 1;
    }
    if !rule.targets.is_empty() && !rule.targets.iter().any(|t| var_changes(t.var)) {
        let key = format!("{:?}|{:?}", rule.targets, rule.excl);
        let n = lists.len() as u32;
        rule.tlist = Some(*lists.entry(key).or_insert(n));
    }
}
