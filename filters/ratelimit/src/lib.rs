//! `ratelimit.wasm`: request rate limits keyed by client IP, a header, a cookie, the
//! route, the path, or a combination, counted fleet-wide on Sluice's fleet store
//! (`sluice.fleet.*` foreign functions) when the policy has `[fleet]`, on this node
//! (Proxy-Wasm shared data) when it has not.
//!
//! ```json
//! {"rules": [{"name": "per-ip", "key": ["ip"], "limit": 10, "window_s": 60,
//!             "algorithm": "fixed", "path_prefix": "/api/",
//!             "overrides": {"10.0.0.1": {"limit": 1000}}}],
//!  "scope": "auto", "fail": "open"}
//! ```
//!
//! Every rule that applies counts the request. Over any limit: `429` with
//! `Retry-After`; every answer carries `RateLimit-Limit`, `RateLimit-Remaining`,
//! `RateLimit-Reset` (seconds) and `RateLimit-Policy` of the rule with the least left
//! (draft-ietf-httpapi-ratelimit-headers). When the fleet store does not answer:
//! `fail: open` lets the request through, `closed` answers `503`; both are counted in
//! the guest metrics `ratelimit_fail_open` / `ratelimit_fail_closed`.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MetricType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

mod config;
mod fleet;
mod key;
mod local;

use config::{Config, Fail, Scope};

/// The outcome of one rule for this request.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    limit: u32,
    window_ms: u32,
    count: u32,
    reset_ms: u32,
    allowed: bool,
}

impl Verdict {
    fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.count)
    }
}

struct RateLimit;

impl kit::Filter for RateLimit {
    const NAME: &'static str = "ratelimit";
    type Config = Config;

    fn parse(raw: Option<&[u8]>) -> Result<Config, String> {
        let cfg = config::parse(raw)?;
        if cfg.scope == Scope::Fleet && !fleet::enabled() {
            return Err("`scope: fleet` needs a [fleet] store in the policy".into());
        }
        Ok(cfg)
    }

    fn http_context(config: Option<Rc<Config>>, _id: u32) -> Option<Box<dyn HttpContext>> {
        let config = config?;
        let use_fleet = match config.scope {
            Scope::Local => false,
            Scope::Fleet => true,
            Scope::Auto => fleet_enabled(),
        };
        Some(Box::new(Stream {
            config,
            use_fleet,
            pending: HashMap::new(),
            verdicts: Vec::new(),
            failed: false,
            paused: false,
        }))
    }
}

/// Whether the host has a fleet store, asked once per VM.
fn fleet_enabled() -> bool {
    thread_local!(static ON: std::cell::OnceCell<bool> = const { std::cell::OnceCell::new() });
    ON.with(|on| *on.get_or_init(fleet::enabled))
}

/// Counts `name` in the guest metrics (defined on first use).
fn count(name: &'static str) {
    thread_local!(static IDS: RefCell<HashMap<&'static str, u32>> = RefCell::new(HashMap::new()));
    IDS.with(|ids| {
        let mut ids = ids.borrow_mut();
        let id = match ids.get(name) {
            Some(id) => *id,
            None => match hostcalls::define_metric(MetricType::Counter, name) {
                Ok(id) => *ids.entry(name).or_insert(id),
                Err(_) => return,
            },
        };
        let _ = hostcalls::increment_metric(id, 1);
    });
}

struct Stream {
    config: Rc<Config>,
    use_fleet: bool,
    /// Fleet calls in flight: token -> (limit, window).
    pending: HashMap<u32, (u32, u32)>,
    verdicts: Vec<Verdict>,
    /// A fleet call failed (the fail policy applies).
    failed: bool,
    /// The request is paused waiting for the fleet store.
    paused: bool,
}

impl key::Request for Stream {
    fn client_address(&self) -> Option<String> {
        self.get_property(vec!["source", "address"])
            .and_then(|b| String::from_utf8(b).ok())
    }
    fn header(&self, name: &str) -> Option<String> {
        self.get_http_request_header(name)
    }
    fn route(&self) -> Option<String> {
        self.get_property(vec!["route_name"])
            .and_then(|b| String::from_utf8(b).ok())
    }
    fn path(&self) -> Option<String> {
        self.get_http_request_header(":path")
    }
}

impl Stream {
    fn now_ms(&self) -> u64 {
        self.get_current_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// The rule with the least left (the one the headers describe).
    fn tightest(&self) -> Option<Verdict> {
        let refused = self.verdicts.iter().filter(|v| !v.allowed);
        let worst_refused = refused.max_by_key(|v| v.reset_ms).copied();
        worst_refused.or_else(|| {
            self.verdicts
                .iter()
                .min_by_key(|v| (v.remaining(), std::cmp::Reverse(v.reset_ms)))
                .copied()
        })
    }

    fn headers(v: &Verdict) -> Vec<(&'static str, String)> {
        let reset_s = v.reset_ms.div_ceil(1000).max(1);
        vec![
            ("ratelimit-limit", v.limit.to_string()),
            ("ratelimit-remaining", v.remaining().to_string()),
            ("ratelimit-reset", reset_s.to_string()),
            (
                "ratelimit-policy",
                format!("{};w={}", v.limit, v.window_ms / 1000),
            ),
        ]
    }

    /// Every rule has answered: let the request on, or refuse it.
    fn decide(&mut self) -> Action {
        if self.failed && self.config.fail == Fail::Closed {
            count("ratelimit_fail_closed");
            self.send_http_response(
                503,
                vec![("retry-after", "1"), ("content-type", "text/plain")],
                Some(b"rate limit store unavailable\n"),
            );
            return Action::Pause;
        }
        if self.failed {
            count("ratelimit_fail_open");
        }
        match self.tightest() {
            Some(v) if !v.allowed => {
                count("ratelimit_limited");
                let mut h = Self::headers(&v);
                h.push(("retry-after", v.reset_ms.div_ceil(1000).max(1).to_string()));
                h.push(("content-type", "text/plain".to_string()));
                let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.send_http_response(429, h, Some(b"too many requests\n"));
                Action::Pause
            }
            _ => {
                if self.paused {
                    self.paused = false;
                    self.resume_http_request();
                }
                Action::Continue
            }
        }
    }
}

impl Context for Stream {
    fn on_foreign_function(&mut self, token: u32, size: usize) {
        let Some((limit, window_ms)) = self.pending.remove(&token) else {
            return;
        };
        let data = hostcalls::get_buffer(BufferType::CallData, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        match fleet::reply(&data) {
            Ok((count, reset_ms, counted)) => self.verdicts.push(Verdict {
                limit,
                window_ms,
                count,
                reset_ms,
                allowed: counted && count <= limit,
            }),
            Err(_) => self.failed = true,
        }
        if self.pending.is_empty() {
            self.decide();
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let config = self.config.clone();
        let now = self.now_ms();
        for rule in &config.rules {
            let Some(value) = key::value(rule, self) else {
                continue;
            };
            let (limit, window_ms) = rule.limit_for(&value);
            let k = format!("rl:{}:{}", rule.name, value);
            if self.use_fleet {
                match fleet::start(&k, limit, window_ms, rule.algorithm) {
                    Ok(token) => {
                        self.pending.insert(token, (limit, window_ms));
                    }
                    Err(_) => self.failed = true,
                }
            } else {
                match local::hit(&k, limit, window_ms, rule.algorithm, now) {
                    Ok(h) => self.verdicts.push(Verdict {
                        limit,
                        window_ms,
                        count: h.count,
                        reset_ms: h.reset_ms,
                        allowed: h.allowed,
                    }),
                    Err(_) => self.failed = true,
                }
            }
        }
        if !self.pending.is_empty() {
            self.paused = true;
            return Action::Pause;
        }
        self.decide()
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if let Some(v) = self.tightest() {
            for (k, val) in Self::headers(&v) {
                self.set_http_response_header(k, Some(&val));
            }
        }
        Action::Continue
    }
}

kit::main!(RateLimit);
