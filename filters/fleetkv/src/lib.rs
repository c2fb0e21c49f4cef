//! `fleetkv.wasm`: test filter for the fleet store's key-value operations
//! (`sluice.fleet.get`, `sluice.fleet.set`, `sluice.fleet.cas`; Sluice's docs/ABI.md).
//!
//! A request with `x-kv` is answered by the filter itself once the store has answered:
//! - `get KEY`: `found VALUE` or `absent`;
//! - `set KEY TTL_MS VALUE`: `done`;
//! - `cas KEY EXPECTED NEW` (`-` as EXPECTED: only when absent): `swapped 1` or `swapped 0`;
//! - a failure: `failed STATUS MESSAGE` (1 error, 2 timeout, 3 unavailable); a refused
//!   start: `refused STATUS`.
//!
//! Requests without `x-kv` pass untouched.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Kv { op: None }))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Kv {
    /// The operation waiting for the store: its name and token.
    op: Option<(&'static str, u32)>,
}

fn le(n: u32) -> [u8; 4] {
    n.to_le_bytes()
}

/// The foreign function and its arguments for an `x-kv` line.
fn args(line: &str) -> Option<(&'static str, Vec<u8>)> {
    let mut w = line.splitn(4, ' ');
    let (op, key) = (w.next()?, w.next()?.as_bytes());
    Some(match op {
        "get" => ("get", key.to_vec()),
        "set" => {
            let ttl: u32 = w.next()?.parse().ok()?;
            let value = w.next().unwrap_or("");
            let mut a = le(ttl).to_vec();
            a.extend(le(key.len() as u32));
            a.extend(key);
            a.extend(value.as_bytes());
            ("set", a)
        }
        "cas" => {
            let expected = w.next()?;
            let new = w.next().unwrap_or("");
            let mut a = le(0).to_vec();
            a.extend(le(key.len() as u32));
            a.extend(key);
            if expected == "-" {
                a.extend(le(u32::MAX));
            } else {
                a.extend(le(expected.len() as u32));
                a.extend(expected.as_bytes());
            }
            a.extend(new.as_bytes());
            ("cas", a)
        }
        _ => return None,
    })
}

/// What the filter answers for an operation's completion data.
fn describe(op: &str, data: &[u8]) -> String {
    match data.split_first() {
        Some((0, rest)) => match op {
            "get" => match rest.split_first() {
                Some((1, v)) => format!("found {}", String::from_utf8_lossy(v)),
                _ => "absent".into(),
            },
            "set" => "done".into(),
            _ => format!("swapped {}", rest.first().copied().unwrap_or(0)),
        },
        Some((s, msg)) => format!("failed {s} {}", String::from_utf8_lossy(msg)),
        None => "failed empty".into(),
    }
}

impl Context for Kv {
    fn on_foreign_function(&mut self, token: u32, size: usize) {
        let Some((op, t)) = self.op else { return };
        if t != token {
            return;
        }
        self.op = None;
        let data = hostcalls::get_buffer(BufferType::CallData, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let body = describe(op, &data);
        self.send_http_response(200, vec![("x-kv-result", "1")], Some(body.as_bytes()));
    }
}

impl HttpContext for Kv {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let Some(line) = self.get_http_request_header("x-kv") else {
            return Action::Continue;
        };
        let Some((op, a)) = args(&line) else {
            self.send_http_response(400, vec![], Some(b"bad x-kv\n"));
            return Action::Pause;
        };
        match hostcalls::call_foreign_function(&format!("sluice.fleet.{op}"), Some(&a)) {
            Ok(Some(t)) if t.len() == 4 => {
                self.op = Some((op, u32::from_le_bytes([t[0], t[1], t[2], t[3]])));
                Action::Pause
            }
            other => {
                let s = match other {
                    Err(s) => format!("refused {s:?}"),
                    Ok(_) => "refused no-token".into(),
                };
                self.send_http_response(200, vec![], Some(s.as_bytes()));
                Action::Pause
            }
        }
    }
}
