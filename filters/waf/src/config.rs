//! Filter configuration (JSON) and building a [`Waf`] from it.

use crate::load::{glob_match, Engine, FileSource, Loader};
use crate::model::Mode;
use crate::ops::HostMatch;
use crate::tx::{Snapshot, Transaction};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Filter configuration; see README.md.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Rule files in load order; entries with `*`/`?` are globs matched against `sluice.file.list`.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Inline SecLang, loaded after `rules`.
    #[serde(default)]
    pub inline: String,
    /// Inline data files for `@pmFromFile` / `Include`: absolute path -> contents.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// `block`, `detect` or `off`; overrides SecRuleEngine (absent: the rule files decide).
    #[serde(default)]
    pub mode: Option<String>,
    /// Response header listing the ids of logged rule matches (for differential tests).
    #[serde(default)]
    pub report_header: Option<String>,
    /// Status for `deny` without `status:` (default 403).
    #[serde(default)]
    pub status: Option<u16>,
    /// CRS paranoia level (sets `tx.paranoia_level`, CRS 3's, and CRS 4's
    /// `tx.blocking_paranoia_level` and `tx.detection_paranoia_level` before phase 1).
    #[serde(default)]
    pub paranoia: Option<u8>,
    /// CRS inbound anomaly threshold (sets `tx.inbound_anomaly_score_threshold`).
    #[serde(default)]
    pub anomaly_threshold: Option<u32>,
    /// `wasm` (default: measured faster), `host`, or `auto` (host matchers when the host has them).
    #[serde(default)]
    pub matchers: Option<String>,
    /// Overrides SecRequestBodyLimit and SecRequestBodyNoFilesLimit.
    #[serde(default)]
    pub body_limit: Option<usize>,
    /// Overrides SecResponseBodyLimit (keep it under the host's buffer limit).
    #[serde(default)]
    pub response_body_limit: Option<usize>,
}

impl Config {
    /// Parses the plugin configuration (empty = defaults).
    pub fn parse(raw: &[u8]) -> Result<Config, String> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        serde_json::from_slice(raw).map_err(|e| format!("invalid config: {e}"))
    }
}

/// A configured WAF: the compiled engine plus per-request initial TX values.
pub struct Waf {
    /// `report_header` from the config.
    pub report_header: Option<String>,
    /// The engine.
    pub engine: Rc<Engine>,
    /// TX values set before phase 1 (from `paranoia`, `anomaly_threshold`).
    pub init_tx: Vec<(String, String)>,
    /// State after the request-independent head of phase 1 (see [`Snapshot`]).
    pub snapshot: Option<Snapshot>,
}

impl Waf {
    /// True when no rule runs (no phase holds one): a transaction can neither match nor
    /// block, so a request without a body needs none.
    pub fn idle(&self) -> bool {
        [1, 2, 3, 4, 5].iter().all(|p| {
            !self.engine.phases[*p]
                .iter()
                .any(|e| matches!(e, crate::load::Entry::Rule(..)))
        })
    }

    /// A fresh transaction.
    pub fn transaction(&self) -> Transaction {
        self.engine.memo.borrow_mut().trim();
        let mut t = Transaction::new(self.engine.clone());
        match &self.snapshot {
            Some(s) => t.restore(s),
            None => {
                for (k, v) in &self.init_tx {
                    t.tx_set(k, v.as_bytes());
                }
            }
        }
        t
    }

    /// Computes [`Waf::snapshot`] (configure time).
    pub fn take_snapshot(&mut self) {
        self.snapshot = None;
        let s = self.transaction().snapshot();
        self.snapshot = Some(s);
    }
}

/// Files from the host plus the config's inline `data`.
pub struct Overlay<'a> {
    /// Host (or filesystem) files.
    pub base: Option<&'a dyn FileSource>,
    /// Inline data.
    pub data: &'a BTreeMap<String, String>,
}

impl FileSource for Overlay<'_> {
    fn list(&self) -> Vec<String> {
        let mut l: Vec<String> = self.data.keys().cloned().collect();
        if let Some(b) = self.base {
            l.extend(b.list());
        }
        l
    }
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        if let Some(d) = self.data.get(path) {
            return Ok(d.as_bytes().to_vec());
        }
        match self.base {
            Some(b) => b.read(path),
            None => Err(
                "the host offers no files (sluice.file.read NOT_FOUND); use inline rules and data"
                    .into(),
            ),
        }
    }
}

/// Builds the WAF: loads `rules` (globs expanded against the file list), then `inline`.
pub fn build(
    cfg: &Config,
    files: Option<&dyn FileSource>,
    host: Option<Rc<dyn HostMatch>>,
) -> Result<Waf, String> {
    let src = Overlay {
        base: files,
        data: &cfg.data,
    };
    let mut loader = Loader::new(&src, host);
    let mut listing: Option<Vec<String>> = None;
    for entry in &cfg.rules {
        if entry.contains(['*', '?']) {
            let l = listing.get_or_insert_with(|| src.list());
            let mut m: Vec<&String> = l.iter().filter(|f| glob_match(entry, f)).collect();
            m.sort();
            if m.is_empty() {
                return Err(format!(
                    "rules: {entry:?} matches no file offered by the host"
                ));
            }
            for f in m {
                loader.load_file(f).map_err(|e| e.to_string())?;
            }
        } else {
            loader.load_file(entry).map_err(|e| e.to_string())?;
        }
    }
    if !cfg.inline.trim().is_empty() {
        loader
            .load_text("<inline>", &cfg.inline)
            .map_err(|e| e.to_string())?;
    }
    let st = loader.settings_mut();
    match cfg.mode.as_deref() {
        None => {}
        Some("block") => st.mode = Mode::On,
        Some("detect") => st.mode = Mode::DetectionOnly,
        Some("off") => st.mode = Mode::Off,
        Some(m) => {
            return Err(format!(
                "mode: expected \"block\", \"detect\" or \"off\", got {m:?}"
            ))
        }
    }
    if let Some(s) = cfg.status {
        if !(200..=599).contains(&s) {
            return Err(format!("status: {s} is not an HTTP status"));
        }
        st.default_status = s;
    }
    if let Some(l) = cfg.body_limit {
        st.body_limit = l;
        st.body_nofiles_limit = l;
    }
    if let Some(l) = cfg.response_body_limit {
        st.resp_body_limit = l;
    }
    let engine = loader.finish().map_err(|e| e.to_string())?;
    let mut init_tx = Vec::new();
    if let Some(p) = cfg.paranoia {
        if !(1..=4).contains(&p) {
            return Err(format!("paranoia: {p} not in 1..=4"));
        }
        // CRS 3 reads `tx.paranoia_level`; CRS 4 reads `tx.blocking_paranoia_level` and
        // `tx.detection_paranoia_level` (and derives the old name from them): set all three.
        for name in [
            "paranoia_level",
            "blocking_paranoia_level",
            "detection_paranoia_level",
        ] {
            init_tx.push((name.to_string(), p.to_string()));
        }
    }
    if let Some(t) = cfg.anomaly_threshold {
        init_tx.push(("inbound_anomaly_score_threshold".to_string(), t.to_string()));
    }
    if let Some(h) = &cfg.report_header {
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("report_header: {h:?} is not a header name"));
        }
    }
    let mut waf = Waf {
        engine: Rc::new(engine),
        init_tx,
        report_header: cfg.report_header.clone(),
        snapshot: None,
    };
    waf.take_snapshot();
    Ok(waf)
}

/// One logged rule of the audit line. Fields in alphabetical order: the line is what
/// `serde_json::json!` wrote before (its maps sort their keys), without building `Value`s.
#[derive(serde::Serialize)]
struct AuditRule<'a> {
    data: &'a str,
    id: u32,
    msg: &'a str,
    var: &'a str,
}

/// The audit line's object (fields in alphabetical order, see [`AuditRule`]).
#[derive(serde::Serialize)]
struct AuditLine<'a> {
    action: &'a str,
    anomaly_score: i64,
    outbound_anomaly_score: Option<i64>,
    phase: Option<u8>,
    request_id: &'a str,
    rules: Vec<AuditRule<'a>>,
    status: Option<u16>,
}

/// The audit log line (JSON) for a finished transaction.
pub fn audit_json(tx: &Transaction, request_id: &str) -> String {
    let action = if tx.intervention.is_some() {
        "block"
    } else if tx.would_block.is_some() {
        "detect"
    } else {
        "pass"
    };
    let decision = tx.intervention.or(tx.would_block);
    let line = AuditLine {
        action,
        anomaly_score: tx.anomaly_score(),
        outbound_anomaly_score: tx.tx_get("outbound_anomaly_score").map(crate::ops::atoi),
        phase: decision.map(|i| i.phase),
        request_id,
        rules: tx
            .logs
            .iter()
            .map(|l| AuditRule {
                data: &l.data,
                id: l.id,
                msg: &l.msg,
                var: &l.var,
            })
            .collect(),
        status: decision.map(|i| i.status),
    };
    let line = serde_json::to_string(&line).unwrap_or_default();
    escape_controls(line)
}

/// DEL and the C1 controls (U+007F-U+009F) as JSON `\u00XX` escapes: serde_json writes them
/// raw, and log formatters rewrite them (tracing-subscriber as `\u{80}`), which breaks the JSON.
/// They can only occur inside JSON strings, where the escape means the same character.
fn escape_controls(line: String) -> String {
    if !line.chars().any(|c| ('\u{7f}'..='\u{9f}').contains(&c)) {
        return line;
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if ('\u{7f}'..='\u{9f}').contains(&c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Space-separated ids of the logged matches (what `report_header` carries), `None` if none.
pub fn report_ids(tx: &Transaction) -> Option<String> {
    let ids: Vec<String> = tx
        .logs
        .iter()
        .filter(|l| l.id != 0)
        .map(|l| l.id.to_string())
        .collect();
    (!ids.is_empty()).then(|| ids.join(" "))
}
