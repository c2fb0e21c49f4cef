//! The configuration: JSON (the policy's TOML table) -> a compiled [`Router`].
//!
//! Structure errors come from serde with the path of the offending key
//! (`rules[2].match: unknown field ...`); value errors (a bad regex, weights
//! that sum to 0, a header name with a space, ...) are checked here with the
//! same kind of path. Regexes are compiled once, here.

use crate::rules::{
    Action, Arm, Conditions, CookieSpec, HeaderOps, HostPattern, KeySource, Rewrite, Router, Rule,
    Sticky, Target, ValueMatcher,
};
use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Compiled size limit of one regex (the regex crate's unit: bytes of program).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Lazy-DFA cache of one regex: a bound on the guest memory a regex may take
/// while matching (past it the regex crate falls back to slower engines). The
/// crate's default (2 MiB each) would let a few dozen regexes fill a VM's 64 MiB.
const REGEX_DFA_LIMIT: usize = 256 << 10;
/// Longest regex pattern accepted.
const REGEX_MAX_LEN: usize = 4096;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    default: Option<RawRule>,
}

/// A rule; the `default` action uses the same keys minus `name` and `match`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    #[serde(rename = "match")]
    matches: Option<RawMatch>,
    pool: Option<String>,
    split: Option<Vec<RawArm>>,
    sticky: Option<RawSticky>,
    hash_key: Option<Value>,
    rewrite: Option<RawRewrite>,
    request_headers: Option<RawHeaderOps>,
    response_headers: Option<RawHeaderOps>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    host: Option<Value>,
    path: Option<String>,
    path_prefix: Option<String>,
    path_regex: Option<String>,
    methods: Option<Vec<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Value>,
    #[serde(default)]
    cookies: BTreeMap<String, Value>,
    #[serde(default)]
    query: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArm {
    pool: String,
    weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSticky {
    cookie: Option<String>,
    key: Option<Value>,
    max_age: Option<u64>,
    #[serde(default = "default_cookie_path")]
    path: String,
    domain: Option<String>,
    #[serde(default)]
    secure: bool,
}

fn default_cookie_path() -> String {
    "/".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRewrite {
    path_prefix: Option<String>,
    path_regex: Option<RawRegexRewrite>,
    host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegexRewrite {
    pattern: String,
    replace: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderOps {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// Parses and compiles a configuration. Missing or whitespace-only input is
/// an empty router (no rules, no default: every request passes through).
pub fn parse(raw: Option<&[u8]>) -> Result<Router, String> {
    let raw: RawConfig = match raw {
        None => RawConfig::default(),
        Some(b) if b.iter().all(u8::is_ascii_whitespace) => RawConfig::default(),
        Some(b) => {
            let tree: Value = serde_json::from_slice(b).map_err(|e| without_position(&e))?;
            check_shape(&tree)?;
            let mut de = serde_json::Deserializer::from_slice(b);
            let cfg = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let path = e.path().to_string();
                let msg = without_position(e.inner());
                if path == "." {
                    msg
                } else {
                    format!("{path}: {msg}")
                }
            })?;
            de.end().map_err(|e| without_position(&e))?;
            cfg
        }
    };
    compile(raw)
}

/// Tables must be JSON objects: serde would also read a struct from an array
/// (by position), which would turn `sticky = ["arm"]` into a cookie name.
fn check_shape(v: &Value) -> Result<(), String> {
    fn table<'a>(v: Option<&'a Value>, at: &str) -> Result<Option<&'a Value>, String> {
        match v {
            None => Ok(None),
            Some(t @ Value::Object(_)) => Ok(Some(t)),
            Some(_) => Err(format!("{at}: expected a table")),
        }
    }
    fn action(r: &Value, at: &str) -> Result<(), String> {
        for k in [
            "match",
            "sticky",
            "rewrite",
            "request_headers",
            "response_headers",
        ] {
            let t = table(r.get(k), &format!("{at}.{k}"))?;
            if k == "rewrite" {
                table(
                    t.and_then(|t| t.get("path_regex")),
                    &format!("{at}.rewrite.path_regex"),
                )?;
            }
        }
        if let Some(Value::Array(arms)) = r.get("split") {
            for (i, a) in arms.iter().enumerate() {
                table(Some(a), &format!("{at}.split[{i}]"))?;
            }
        }
        Ok(())
    }
    table(Some(v), "the configuration")?;
    if let Some(Value::Array(rules)) = v.get("rules") {
        for (i, r) in rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            table(Some(r), &at)?;
            action(r, &at)?;
        }
    }
    if let Some(d) = table(v.get("default"), "default")? {
        action(d, "default")?;
    }
    Ok(())
}

/// serde_json's message without "at line 1 column 57" (the JSON is generated
/// from the policy's TOML, so its positions mean nothing to the operator).
fn without_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn compile(raw: RawConfig) -> Result<Router, String> {
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, r) in raw.rules.into_iter().enumerate() {
        let name = match &r.name {
            Some(n) if n.trim().is_empty() => {
                return Err(format!("rules[{i}].name: must not be empty"))
            }
            Some(n) => n.clone(),
            None => format!("rule{i}"),
        };
        let at = format!("rules[{i}] ({name})");
        let cond = match &r.matches {
            Some(m) => conditions(m, &at)?,
            None => Conditions::default(),
        };
        let action = action(&r, &at, cond.path_prefix.as_deref())?;
        rules.push(Rule { name, cond, action });
    }
    let default = match raw.default {
        None => None,
        Some(d) => {
            if d.name.is_some() {
                return Err("default: `name` is only for rules".to_string());
            }
            if d.matches.is_some() {
                return Err(
                    "default: `match` is only for rules (the default applies when no rule matches)"
                        .to_string(),
                );
            }
            Some(action(&d, "default", None)?)
        }
    };
    Ok(Router::new(rules, default))
}

fn conditions(m: &RawMatch, at: &str) -> Result<Conditions, String> {
    let at = format!("{at}.match");
    let mut c = Conditions::default();
    if let Some(h) = &m.host {
        let list = strings(h)
            .ok_or_else(|| format!("{at}.host: expected a host name or an array of host names"))?;
        if list.is_empty() {
            return Err(format!(
                "{at}.host: empty list (omit `host` to match any host)"
            ));
        }
        for h in list {
            c.hosts
                .push(host_pattern(&h).map_err(|e| format!("{at}.host: {e}"))?);
        }
    }
    if let Some(p) = &m.path {
        check_path(p).map_err(|e| format!("{at}.path: {e}"))?;
        c.path = Some(p.clone());
    }
    if let Some(p) = &m.path_prefix {
        check_path(p).map_err(|e| format!("{at}.path_prefix: {e}"))?;
        c.path_prefix = Some(p.clone());
    }
    if let Some(p) = &m.path_regex {
        c.path_regex = Some(regex(p).map_err(|e| format!("{at}.path_regex: {e}"))?);
    }
    if let Some(ms) = &m.methods {
        if ms.is_empty() {
            return Err(format!(
                "{at}.methods: empty list (omit `methods` to match any method)"
            ));
        }
        for mth in ms {
            if mth.is_empty() || !mth.bytes().all(is_tchar) {
                return Err(format!("{at}.methods: {mth:?} is not an HTTP method"));
            }
            c.methods.push(mth.to_ascii_uppercase());
        }
    }
    for (name, v) in &m.headers {
        let at = format!("{at}.headers.{name}");
        let lname = header_name(name).map_err(|e| format!("{at}: {e}"))?;
        c.headers
            .push((lname, value_matcher(v).map_err(|e| format!("{at}: {e}"))?));
    }
    for (name, v) in &m.cookies {
        let at = format!("{at}.cookies.{name}");
        cookie_name(name).map_err(|e| format!("{at}: {e}"))?;
        c.cookies.push((
            name.clone(),
            value_matcher(v).map_err(|e| format!("{at}: {e}"))?,
        ));
    }
    for (name, v) in &m.query {
        let at = format!("{at}.query.{name}");
        if name.is_empty() {
            return Err(format!("{at}: empty argument name"));
        }
        c.query.push((
            name.clone(),
            value_matcher(v).map_err(|e| format!("{at}: {e}"))?,
        ));
    }
    Ok(c)
}

fn action(r: &RawRule, at: &str, matched_prefix: Option<&str>) -> Result<Action, String> {
    if r.sticky.is_some() && r.split.is_none() {
        return Err(format!("{at}.sticky: only with `split`"));
    }
    let target = match (&r.pool, &r.split) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{at}: `pool` and `split` are exclusive (a split names its pools)"
            ))
        }
        (Some(p), None) => Target::Pool(pool_name(p).map_err(|e| format!("{at}.pool: {e}"))?),
        (None, Some(arms)) => split(arms, r.sticky.as_ref(), at)?,
        (None, None) => Target::None,
    };
    let hash_key = match &r.hash_key {
        None => Vec::new(),
        Some(v) => key_sources(v).map_err(|e| format!("{at}.hash_key: {e}"))?,
    };
    let rewrite = match &r.rewrite {
        None => Rewrite::default(),
        Some(rw) => rewrite(rw, &format!("{at}.rewrite"), matched_prefix)?,
    };
    let ops = |o: &Option<RawHeaderOps>, what: &str| match o {
        None => Ok(HeaderOps::default()),
        Some(o) => header_ops(o, &format!("{at}.{what}")),
    };
    Ok(Action {
        target,
        hash_key,
        rewrite,
        request_headers: ops(&r.request_headers, "request_headers")?,
        response_headers: ops(&r.response_headers, "response_headers")?,
    })
}

fn split(arms: &[RawArm], sticky: Option<&RawSticky>, at: &str) -> Result<Target, String> {
    let at_split = format!("{at}.split");
    if arms.is_empty() {
        return Err(format!("{at_split}: no arms"));
    }
    let mut out: Vec<Arm> = Vec::with_capacity(arms.len());
    for (i, a) in arms.iter().enumerate() {
        let pool = pool_name(&a.pool).map_err(|e| format!("{at_split}[{i}].pool: {e}"))?;
        if out.iter().any(|o| o.pool == pool) {
            return Err(format!(
                "{at_split}[{i}].pool: {pool:?} appears twice in the split"
            ));
        }
        out.push(Arm {
            pool,
            weight: a.weight,
        });
    }
    let total: u64 = out.iter().map(|a| u64::from(a.weight)).sum();
    if total == 0 {
        return Err(format!("{at_split}: the weights sum to 0"));
    }
    let sticky = match sticky {
        None => None,
        Some(s) => Some(sticky_spec(s, &out, &format!("{at}.sticky"))?),
    };
    Ok(Target::Split {
        arms: out,
        total,
        sticky,
    })
}

fn sticky_spec(s: &RawSticky, arms: &[Arm], at: &str) -> Result<Sticky, String> {
    let key = match &s.key {
        None => Vec::new(),
        Some(v) => key_sources(v).map_err(|e| format!("{at}.key: {e}"))?,
    };
    let cookie = match &s.cookie {
        None => {
            if s.max_age.is_some() || s.domain.is_some() || s.secure || s.path != "/" {
                return Err(format!(
                    "{at}: `max_age`, `path`, `domain` and `secure` are cookie attributes: set `cookie` too"
                ));
            }
            None
        }
        Some(name) => {
            cookie_name(name).map_err(|e| format!("{at}.cookie: {e}"))?;
            for a in arms {
                if !a.pool.bytes().all(is_cookie_octet) {
                    return Err(format!(
                        "{at}.cookie: pool {:?} cannot be a cookie value (use letters, digits, `-`, `_`, `.`)",
                        a.pool
                    ));
                }
            }
            if !s.path.starts_with('/') || !s.path.bytes().all(is_attr_octet) {
                return Err(format!("{at}.path: {:?} is not a cookie path", s.path));
            }
            if let Some(d) = &s.domain {
                if d.is_empty() || !d.bytes().all(is_attr_octet) {
                    return Err(format!("{at}.domain: {d:?} is not a cookie domain"));
                }
            }
            Some(CookieSpec {
                name: name.clone(),
                max_age: s.max_age,
                path: s.path.clone(),
                domain: s.domain.clone(),
                secure: s.secure,
            })
        }
    };
    if cookie.is_none() && key.is_empty() {
        return Err(format!("{at}: set `cookie`, `key` or both"));
    }
    Ok(Sticky { cookie, key })
}

fn rewrite(rw: &RawRewrite, at: &str, matched_prefix: Option<&str>) -> Result<Rewrite, String> {
    let mut out = Rewrite::default();
    if let Some(to) = &rw.path_prefix {
        let Some(from) = matched_prefix else {
            return Err(format!(
                "{at}.path_prefix: replaces the rule's `match.path_prefix`, which this {} has not",
                if at.starts_with("default") {
                    "default action"
                } else {
                    "rule"
                }
            ));
        };
        check_path(to).map_err(|e| format!("{at}.path_prefix: {e}"))?;
        out.prefix = Some((from.to_string(), to.clone()));
    }
    if let Some(r) = &rw.path_regex {
        let re = regex(&r.pattern).map_err(|e| format!("{at}.path_regex.pattern: {e}"))?;
        if r.replace.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!(
                "{at}.path_regex.replace: control characters or spaces"
            ));
        }
        out.regex = Some((re, r.replace.clone()));
    }
    if let Some(h) = &rw.host {
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'@')
        {
            return Err(format!(
                "{at}.host: {h:?} is not a host (name or name:port)"
            ));
        }
        out.host = Some(h.clone());
    }
    Ok(out)
}

fn header_ops(o: &RawHeaderOps, at: &str) -> Result<HeaderOps, String> {
    let mut out = HeaderOps::default();
    for n in &o.remove {
        out.remove
            .push(header_name(n).map_err(|e| format!("{at}.remove: {e}"))?);
    }
    for (what, src, dst) in [("set", &o.set, &mut out.set), ("add", &o.add, &mut out.add)] {
        for (n, v) in src {
            let n = header_name(n).map_err(|e| format!("{at}.{what}: {e}"))?;
            if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(format!("{at}.{what}.{n}: the value has CR, LF or NUL"));
            }
            dst.push((n, v.clone()));
        }
    }
    Ok(out)
}

/// A string, a number or a bool as text; or an array of those.
fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => a.iter().map(scalar).collect(),
        v => scalar(v).map(|s| vec![s]),
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `"v"` (exact), `["v", "w"]` (any of), `{exact|prefix|suffix|regex = "..."}`, `{present = bool}`.
fn value_matcher(v: &Value) -> Result<ValueMatcher, String> {
    const EXPECTED: &str = "expected a value, an array of values, or a table with one of `exact`, `prefix`, `suffix`, `regex`, `present`";
    match v {
        Value::Array(_) => {
            let list = strings(v).ok_or_else(|| EXPECTED.to_string())?;
            if list.is_empty() {
                return Err("empty list of values".to_string());
            }
            Ok(ValueMatcher::OneOf(list))
        }
        Value::Object(o) => {
            let mut it = o.iter();
            let (Some((k, v)), None) = (it.next(), it.next()) else {
                return Err(EXPECTED.to_string());
            };
            let text = || {
                scalar(v)
                    .filter(|_| !v.is_boolean())
                    .ok_or_else(|| format!("`{k}` takes a string"))
            };
            match k.as_str() {
                "exact" => Ok(ValueMatcher::Exact(text()?)),
                "prefix" => Ok(ValueMatcher::Prefix(text()?)),
                "suffix" => Ok(ValueMatcher::Suffix(text()?)),
                "regex" => Ok(ValueMatcher::Regex(regex(&text()?)?)),
                "present" => match v {
                    Value::Bool(b) => Ok(ValueMatcher::Present(*b)),
                    _ => Err("`present` takes true or false".to_string()),
                },
                other => Err(format!("unknown matcher `{other}`: {EXPECTED}")),
            }
        }
        v => scalar(v)
            .map(ValueMatcher::Exact)
            .ok_or_else(|| EXPECTED.to_string()),
    }
}

/// `"source_ip"`, `"path"`, `"host"`, `{header|cookie|query = "name"}`, or an
/// array of those (the first one the request has wins).
fn key_sources(v: &Value) -> Result<Vec<KeySource>, String> {
    let one = |v: &Value| -> Result<KeySource, String> {
        const EXPECTED: &str = "expected \"source_ip\", \"path\", \"host\", or a table with one of `header`, `cookie`, `query`";
        match v {
            Value::String(s) => match s.as_str() {
                "source_ip" => Ok(KeySource::SourceIp),
                "path" => Ok(KeySource::Path),
                "host" => Ok(KeySource::Host),
                other => Err(format!("unknown key {other:?}: {EXPECTED}")),
            },
            Value::Object(o) => {
                let mut it = o.iter();
                let (Some((k, Value::String(name))), None) = (it.next(), it.next()) else {
                    return Err(EXPECTED.to_string());
                };
                match k.as_str() {
                    "header" => Ok(KeySource::Header(header_name(name)?)),
                    "cookie" => {
                        cookie_name(name)?;
                        Ok(KeySource::Cookie(name.clone()))
                    }
                    "query" if !name.is_empty() => Ok(KeySource::Query(name.clone())),
                    "query" => Err("empty query argument name".to_string()),
                    other => Err(format!("unknown key `{other}`: {EXPECTED}")),
                }
            }
            _ => Err(EXPECTED.to_string()),
        }
    };
    match v {
        Value::Array(a) if a.is_empty() => Err("empty list".to_string()),
        Value::Array(a) => a.iter().map(one).collect(),
        v => Ok(vec![one(v)?]),
    }
}

fn host_pattern(h: &str) -> Result<HostPattern, String> {
    let lower = h.to_ascii_lowercase();
    if lower == "*" {
        return Ok(HostPattern::Any);
    }
    let (suffix, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    // An IPv6 address may come with brackets; a port may not come at all.
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    let name = name.trim_end_matches('.');
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    if !ok {
        return Err(format!(
            "{h:?} is not a host pattern (`name`, `*.suffix` or `*`, without port)"
        ));
    }
    Ok(if suffix {
        HostPattern::Suffix(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_string())
    })
}

fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must start with `/`"));
    }
    if p.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("{p:?} has control characters or spaces"));
    }
    Ok(())
}

fn regex(p: &str) -> Result<Regex, String> {
    if p.len() > REGEX_MAX_LEN {
        return Err(format!("regex longer than {REGEX_MAX_LEN} bytes"));
    }
    RegexBuilder::new(p)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_LIMIT)
        .build()
        .map_err(|e| format!("bad regex {p:?}: {}", one_line(&e.to_string())))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn pool_name(p: &str) -> Result<String, String> {
    if p.is_empty() || p.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("{p:?} is not a pool name"));
    }
    Ok(p.to_string())
}

/// A header name as a lowercase token.
fn header_name(n: &str) -> Result<String, String> {
    if n.is_empty() || !n.bytes().all(is_tchar) {
        return Err(format!("{n:?} is not a header name"));
    }
    Ok(n.to_ascii_lowercase())
}

fn cookie_name(n: &str) -> Result<(), String> {
    if n.is_empty() || !n.bytes().all(is_tchar) {
        return Err(format!("{n:?} is not a cookie name"));
    }
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 6265 `cookie-octet`.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// A cookie attribute value: printable, no `;`.
fn is_attr_octet(b: u8) -> bool {
    b.is_ascii_graphic() && b != b';'
}
