//! The compiled rules and the routing decision. Plain Rust: no hostcalls.

use crate::hash::{fmix64, hash};
use crate::request::Request;
use regex::Regex;

/// A compiled configuration.
#[derive(Debug, Default)]
pub struct Router {
    rules: Vec<Rule>,
    default: Option<Action>,
    needs_source: bool,
}

/// One rule: all its conditions must hold (AND); then its action applies.
#[derive(Debug)]
pub struct Rule {
    /// `name` from the config, or `rule<N>` (N = index).
    pub name: String,
    /// The `match` table (empty: every request).
    pub cond: Conditions,
    /// What to do with a matching request.
    pub action: Action,
}

/// The conditions of a rule's `match` table (empty fields match everything).
#[derive(Debug, Default)]
pub struct Conditions {
    /// Any of these hosts.
    pub hosts: Vec<HostPattern>,
    /// The path (without query) equals this.
    pub path: Option<String>,
    /// The path (without query) starts with this.
    pub path_prefix: Option<String>,
    /// The path (without query) matches this (unanchored).
    pub path_regex: Option<Regex>,
    /// One of these methods.
    pub methods: Vec<String>,
    /// Header (lowercase name) conditions.
    pub headers: Vec<(String, ValueMatcher)>,
    /// Cookie conditions.
    pub cookies: Vec<(String, ValueMatcher)>,
    /// Query argument conditions (values percent-decoded).
    pub query: Vec<(String, ValueMatcher)>,
}

/// A host condition.
#[derive(Debug)]
pub enum HostPattern {
    /// `*`.
    Any,
    /// `example.com` (lowercase).
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: any subdomain, not the apex.
    Suffix(String),
}

/// A condition on a header, cookie or query value.
#[derive(Debug)]
pub enum ValueMatcher {
    /// Equal to.
    Exact(String),
    /// Equal to one of.
    OneOf(Vec<String>),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Matches (unanchored: use `^...$` for the whole value).
    Regex(Regex),
    /// Present (`true`) or absent (`false`), whatever the value.
    Present(bool),
}

/// What a rule (or the default) does.
#[derive(Debug, Default)]
pub struct Action {
    /// Where the request goes.
    pub target: Target,
    /// Where `sluice.upstream.hash_key` comes from (first source present wins).
    pub hash_key: Vec<KeySource>,
    /// Path and host rewrites.
    pub rewrite: Rewrite,
    /// Request header edits.
    pub request_headers: HeaderOps,
    /// Response header edits.
    pub response_headers: HeaderOps,
}

/// The upstream choice of an action.
#[derive(Debug, Default)]
pub enum Target {
    /// Leave the route's own pool.
    #[default]
    None,
    /// This pool.
    Pool(String),
    /// One of these pools, by weight.
    Split {
        /// The arms, in config order.
        arms: Vec<Arm>,
        /// Sum of the weights (> 0).
        total: u64,
        /// How a client keeps its arm.
        sticky: Option<Sticky>,
    },
}

/// One arm of a split.
#[derive(Debug)]
pub struct Arm {
    /// Pool name.
    pub pool: String,
    /// Relative weight; 0 = drained (no new clients, cookies naming it are ignored).
    pub weight: u32,
}

/// Stickiness of a split.
#[derive(Debug)]
pub struct Sticky {
    /// Remember the arm in a cookie.
    pub cookie: Option<CookieSpec>,
    /// Choose by the hash of this key (first source present wins); random if none.
    pub key: Vec<KeySource>,
}

/// The sticky cookie and its `Set-Cookie` attributes.
#[derive(Debug)]
pub struct CookieSpec {
    /// Cookie name; its value is the arm's pool name.
    pub name: String,
    /// `Max-Age` (none: a session cookie).
    pub max_age: Option<u64>,
    /// `Path`.
    pub path: String,
    /// `Domain`.
    pub domain: Option<String>,
    /// `Secure`.
    pub secure: bool,
}

/// Where a key (split stickiness, hash key) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header (lowercase name).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// A query argument (percent-decoded).
    Query(String),
    /// The client IP (`source.address` without port).
    SourceIp,
    /// The path without query.
    Path,
    /// The host (lowercase, no port).
    Host,
}

/// Path and host rewrites, applied in this order: prefix, regex.
#[derive(Debug, Default)]
pub struct Rewrite {
    /// (matched prefix, replacement).
    pub prefix: Option<(String, String)>,
    /// Every match of the regex replaced (with `$1`, `${name}` expansion).
    pub regex: Option<(Regex, String)>,
    /// Host sent upstream.
    pub host: Option<String>,
}

/// Header edits, applied in this order: remove, set, add.
#[derive(Debug, Default)]
pub struct HeaderOps {
    /// Names to remove.
    pub remove: Vec<String>,
    /// Replace (or create) with this value.
    pub set: Vec<(String, String)>,
    /// Append another value.
    pub add: Vec<(String, String)>,
}

impl HeaderOps {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// Which action a decision took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// Rule at this index.
    Rule(usize),
    /// The `default` action.
    Default,
}

/// The outcome for one request: what the glue writes to the host.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The pool (`sluice.upstream.pool`); none = the route's own pool.
    pub pool: Option<String>,
    /// `sluice.upstream.hash_key`.
    pub hash_key: Option<Vec<u8>>,
    /// `sluice.upstream.path`: the rewritten path with the original query.
    pub path: Option<String>,
    /// `sluice.upstream.host`.
    pub host: Option<String>,
    /// A `Set-Cookie` value for the response (a sticky split chose an arm).
    pub set_cookie: Option<String>,
}

impl Router {
    /// A router over compiled rules.
    pub fn new(rules: Vec<Rule>, default: Option<Action>) -> Self {
        let uses_ip = |a: &Action| {
            let sticky = match &a.target {
                Target::Split {
                    sticky: Some(s), ..
                } => s.key.as_slice(),
                _ => &[],
            };
            a.hash_key
                .iter()
                .chain(sticky)
                .any(|k| *k == KeySource::SourceIp)
        };
        let needs_source = rules.iter().map(|r| &r.action).chain(&default).any(uses_ip);
        Router {
            rules,
            default,
            needs_source,
        }
    }

    /// No rules and no default: every request passes through.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.default.is_none()
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether some key reads `source.address` (the glue fetches it only then).
    pub fn needs_source(&self) -> bool {
        self.needs_source
    }

    /// The action of a decision.
    pub fn action(&self, c: Chosen) -> Option<&Action> {
        match c {
            Chosen::Rule(i) => self.rules.get(i).map(|r| &r.action),
            Chosen::Default => self.default.as_ref(),
        }
    }

    /// The first matching rule (or the default); none = pass through.
    pub fn choose(&self, req: &Request) -> Option<Chosen> {
        match self.rules.iter().position(|r| r.cond.matches(req)) {
            Some(i) => Some(Chosen::Rule(i)),
            None => self.default.as_ref().map(|_| Chosen::Default),
        }
    }

    /// Chooses and evaluates the action for `req`.
    pub fn route(&self, req: &Request) -> Option<(Chosen, Decision)> {
        let chosen = self.choose(req)?;
        let action = self.action(chosen)?;
        Some((chosen, action.decide(req)))
    }
}

impl Conditions {
    /// All conditions hold.
    pub fn matches(&self, req: &Request) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(&req.method) {
            return false;
        }
        if !self.hosts.is_empty() {
            let host = req.host();
            if !self.hosts.iter().any(|h| h.matches(host)) {
                return false;
            }
        }
        let path = req.url_path();
        if self.path.as_ref().is_some_and(|p| p != path) {
            return false;
        }
        if self
            .path_prefix
            .as_ref()
            .is_some_and(|p| !path.starts_with(p.as_str()))
        {
            return false;
        }
        if self.path_regex.as_ref().is_some_and(|r| !r.is_match(path)) {
            return false;
        }
        let headers_ok = self.headers.iter().all(|(name, m)| match m {
            ValueMatcher::Present(want) => req.header(name).is_some() == *want,
            m => req.header_values(name).any(|v| m.matches(Some(v))),
        });
        headers_ok
            && self.cookies.iter().all(|(n, m)| m.matches(req.cookie(n)))
            && self.query.iter().all(|(n, m)| m.matches(req.query_arg(n)))
    }
}

impl HostPattern {
    /// `host` is lowercase, without port.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

impl ValueMatcher {
    /// `v` is the value, none if absent.
    pub fn matches(&self, v: Option<&str>) -> bool {
        match (self, v) {
            (ValueMatcher::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (ValueMatcher::Exact(e), Some(v)) => e == v,
            (ValueMatcher::OneOf(l), Some(v)) => l.iter().any(|e| e == v),
            (ValueMatcher::Prefix(p), Some(v)) => v.starts_with(p.as_str()),
            (ValueMatcher::Suffix(s), Some(v)) => v.ends_with(s.as_str()),
            (ValueMatcher::Regex(r), Some(v)) => r.is_match(v),
        }
    }
}

impl KeySource {
    /// The key's bytes in `req`, if it has them (an empty value counts as absent).
    pub fn read<'a>(&self, req: &'a Request) -> Option<&'a str> {
        let v = match self {
            KeySource::Header(n) => req.header(n),
            KeySource::Cookie(n) => req.cookie(n),
            KeySource::Query(n) => req.query_arg(n),
            KeySource::SourceIp => req.source_ip(),
            KeySource::Path => Some(req.url_path()),
            KeySource::Host => Some(req.host()),
        };
        v.filter(|v| !v.is_empty())
    }
}

/// The first source `req` has.
fn first_key<'a>(sources: &[KeySource], req: &'a Request) -> Option<&'a str> {
    sources.iter().find_map(|s| s.read(req))
}

impl Action {
    /// Evaluates the action on `req`.
    pub fn decide(&self, req: &Request) -> Decision {
        let mut d = Decision {
            hash_key: first_key(&self.hash_key, req).map(|k| k.as_bytes().to_vec()),
            ..Decision::default()
        };
        match &self.target {
            Target::None => {}
            Target::Pool(p) => d.pool = Some(p.clone()),
            Target::Split {
                arms,
                total,
                sticky,
            } => {
                let (arm, set_cookie) = pick_arm(arms, *total, sticky.as_ref(), req);
                d.pool = Some(arm.pool.clone());
                d.set_cookie = set_cookie;
            }
        }
        d.path = self.rewrite.path(req);
        d.host = self.rewrite.host.clone();
        d
    }
}

/// The arm for `req`, and the `Set-Cookie` value to send if the client does
/// not hold a valid sticky cookie yet.
fn pick_arm<'a>(
    arms: &'a [Arm],
    total: u64,
    sticky: Option<&Sticky>,
    req: &Request,
) -> (&'a Arm, Option<String>) {
    let cookie = sticky.and_then(|s| s.cookie.as_ref());
    // The cookie wins if it names a live arm.
    if let Some(c) = cookie {
        if let Some(v) = req.cookie(&c.name) {
            if let Some(arm) = arms.iter().find(|a| a.weight > 0 && a.pool == v) {
                return (arm, None);
            }
        }
    }
    let key = sticky.and_then(|s| first_key(&s.key, req));
    let point = match key {
        Some(k) => hash(k.as_bytes()),
        None => fmix64(req.entropy),
    };
    let arm = weighted(arms, total, point);
    (arm, cookie.map(|c| c.set_cookie(&arm.pool)))
}

/// The arm `point` falls into when the weights are laid end to end.
pub fn weighted(arms: &[Arm], total: u64, point: u64) -> &Arm {
    let mut at = point % total;
    for a in arms {
        let w = u64::from(a.weight);
        if at < w {
            return a;
        }
        at -= w;
    }
    // Unreachable while `total` is the sum of the weights; the last live arm is a safe answer.
    arms.iter().rev().find(|a| a.weight > 0).unwrap_or(&arms[0])
}

impl CookieSpec {
    /// `name=value; Path=...; [Domain=...; ]Max-Age=...; HttpOnly; SameSite=Lax[; Secure]`.
    pub fn set_cookie(&self, value: &str) -> String {
        let mut s = format!("{}={}; Path={}", self.name, value, self.path);
        if let Some(d) = &self.domain {
            s.push_str("; Domain=");
            s.push_str(d);
        }
        if let Some(age) = self.max_age {
            s.push_str(&format!("; Max-Age={age}"));
        }
        s.push_str("; HttpOnly; SameSite=Lax");
        if self.secure {
            s.push_str("; Secure");
        }
        s
    }
}

impl Rewrite {
    /// The new path (with the original query), or none if no rewrite applies.
    pub fn path(&self, req: &Request) -> Option<String> {
        if self.prefix.is_none() && self.regex.is_none() {
            return None;
        }
        let mut path = req.url_path().to_string();
        if let Some((from, to)) = &self.prefix {
            if let Some(rest) = path.strip_prefix(from.as_str()) {
                path = format!("{to}{rest}");
            }
        }
        if let Some((re, rep)) = &self.regex {
            path = re.replace_all(&path, rep.as_str()).into_owned();
        }
        // `/api` replaced by `/` gives `/x` for `/api/x`, not `//x`; a regex may drop the `/`.
        let path = match path.strip_prefix("//") {
            Some(rest)
                if self
                    .prefix
                    .as_ref()
                    .is_some_and(|(_, to)| to.ends_with('/')) =>
            {
                format!("/{rest}")
            }
            _ if !path.starts_with('/') => format!("/{path}"),
            _ => path,
        };
        Some(match req.raw_query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        })
    }
}
