//! The filter's JSON configuration: rules (what a key is made of, its limit and
//! window, per-value overrides), where counters live, and what to do when the fleet
//! store fails.

use serde::Deserialize;
use std::collections::HashMap;

/// Longest window (one day).
pub const MAX_WINDOW_S: u64 = 86_400;

/// How a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// A counter per window, reset when the window ends.
    #[default]
    Fixed,
    /// The current window plus the previous one weighted by how much of it still
    /// overlaps the last `window_s` seconds; refused hits are not counted.
    Sliding,
}

/// What an unanswered fleet call means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fail {
    /// Let the request through (counted as `fail_open` in the log).
    #[default]
    Open,
    /// Answer 503.
    Closed,
}

/// Where counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The fleet store when the policy has `[fleet]`, else this node.
    #[default]
    Auto,
    /// This node only (Proxy-Wasm shared data).
    Local,
    /// The fleet store; without `[fleet]` the configuration is refused.
    Fleet,
}

/// One part of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// The client's IP address (`source.address` without the port).
    Ip,
    /// A request header's value (absent: the rule does not apply).
    Header(String),
    /// A cookie's value (absent: the rule does not apply).
    Cookie(String),
    /// The name of the route the request took.
    Route,
    /// The request path, without the query.
    Path,
}

impl Part {
    fn parse(s: &str) -> Result<Part, String> {
        let (kind, arg) = s.split_once(':').unwrap_or((s, ""));
        match (kind, arg) {
            ("ip", "") => Ok(Part::Ip),
            ("route", "") => Ok(Part::Route),
            ("path", "") => Ok(Part::Path),
            ("header", h) if !h.is_empty() => Ok(Part::Header(h.to_ascii_lowercase())),
            ("cookie", c) if !c.is_empty() => Ok(Part::Cookie(c.to_string())),
            _ => Err(format!(
                "unknown key part {s:?} (ip, route, path, header:NAME, cookie:NAME)"
            )),
        }
    }
}

/// A limit for one value of the key.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Requests allowed per window for this value.
    pub limit: u32,
    /// Its window (the rule's when absent).
    pub window_s: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    key: Vec<String>,
    limit: u32,
    window_s: u64,
    #[serde(default)]
    algorithm: Algorithm,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    overrides: HashMap<String, Override>,
}

/// One limit.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name (in keys and logs).
    pub name: String,
    /// What the key is made of, joined with `|`.
    pub key: Vec<Part>,
    /// Requests allowed per window.
    pub limit: u32,
    /// Window length, seconds.
    pub window_s: u64,
    /// How it counts.
    pub algorithm: Algorithm,
    /// Only requests whose path starts with this.
    pub path_prefix: Option<String>,
    /// Limits for particular key values (the joined key as written).
    pub overrides: HashMap<String, Override>,
}

impl Rule {
    /// The limit and window (ms) for key value `value`.
    pub fn limit_for(&self, value: &str) -> (u32, u32) {
        match self.overrides.get(value) {
            Some(o) => (o.limit, (o.window_s.unwrap_or(self.window_s) * 1000) as u32),
            None => (self.limit, (self.window_s * 1000) as u32),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    rules: Vec<RawRule>,
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    fail: Fail,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Limits, all applied.
    pub rules: Vec<Rule>,
    /// Where counters live.
    pub scope: Scope,
    /// What a failed fleet call means.
    pub fail: Fail,
}

/// Parses and checks the configuration.
pub fn parse(raw: Option<&[u8]>) -> Result<Config, String> {
    let raw: RawConfig = kit::json_required(raw, "rules")?;
    if raw.rules.is_empty() || raw.rules.len() > 16 {
        return Err("`rules` must have 1 to 16 rules".into());
    }
    let mut rules = Vec::new();
    for r in raw.rules {
        if r.name.is_empty() || r.name.len() > 64 || r.name.contains(['|', ':']) {
            return Err(format!("rule name {:?}: 1-64 bytes, no '|' or ':'", r.name));
        }
        if r.key.is_empty() || r.key.len() > 4 {
            return Err(format!("rule {}: `key` must have 1 to 4 parts", r.name));
        }
        let key = r
            .key
            .iter()
            .map(|p| Part::parse(p))
            .collect::<Result<_, _>>()?;
        let windows =
            std::iter::once(r.window_s).chain(r.overrides.values().filter_map(|o| o.window_s));
        for w in windows {
            if w == 0 || w > MAX_WINDOW_S {
                return Err(format!(
                    "rule {}: windows must be 1 to {MAX_WINDOW_S} s",
                    r.name
                ));
            }
        }
        rules.push(Rule {
            name: r.name,
            key,
            limit: r.limit,
            window_s: r.window_s,
            algorithm: r.algorithm,
            path_prefix: r.path_prefix,
            overrides: r.overrides,
        });
    }
    Ok(Config {
        rules,
        scope: raw.scope,
        fail: raw.fail,
    })
}
