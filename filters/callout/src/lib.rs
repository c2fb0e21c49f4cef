//! `callout.wasm`: test filter for HTTP callouts (`proxy_http_call` and
//! `proxy_on_http_call_response`).
//!
//! Config (`upstream` is required, so empty/missing config is invalid):
//! ```json
//! {"upstream": "<pool name>", "path": "/echo/callout", "timeout_ms": 1000, "deny_status": 403}
//! ```
//! Requests without an `x-callout` header pass untouched. With it, the filter
//! dispatches `GET <path>` to `upstream` (`:authority: callout`,
//! `x-from-filter: 1`) and pauses the request. When the call answers:
//!   * call failed (no headers, e.g. timeout, or no `:status`):
//!     `x-callout-status: failed` on the request, resume (whatever `x-callout` was);
//!   * `x-callout: deny`: local response `deny_status` with
//!     `x-callout-status: <status>` and body `denied by callout\n` (no resume);
//!   * otherwise: request headers `x-callout-status: <status>`,
//!     `x-callout-body-len: <body_size>`, `x-callout-origin: <x-origin-id or none>`,
//!     then resume.
//!
//! If the dispatch itself fails, `x-callout-error: <Status Debug name>` (e.g.
//! `InternalFailure`, `BadArgument`) is set and the request continues.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use serde::Deserialize;
use std::rc::Rc;
use std::time::Duration;

fn default_path() -> String {
    "/echo/callout".to_string()
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_deny_status() -> u32 {
    403
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    upstream: String,
    #[serde(default = "default_path")]
    path: String,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_deny_status")]
    deny_status: u32,
}

struct Callout;

impl kit::Filter for Callout {
    const NAME: &'static str = "callout";
    type Config = Config;

    fn parse(raw: Option<&[u8]>) -> Result<Config, String> {
        let cfg: Config = kit::json_required(raw, "upstream")?;
        if cfg.upstream.is_empty() {
            return Err("`upstream` must not be empty".to_string());
        }
        if !cfg.path.starts_with('/') {
            return Err(format!("`path` must start with '/': {:?}", cfg.path));
        }
        if !(1..=u64::from(u32::MAX)).contains(&cfg.timeout_ms) {
            return Err(format!(
                "`timeout_ms` {} out of range 1..=4294967295",
                cfg.timeout_ms
            ));
        }
        if !(100..=599).contains(&cfg.deny_status) {
            return Err(format!(
                "`deny_status` {} out of range 100..=599",
                cfg.deny_status
            ));
        }
        Ok(cfg)
    }

    fn http_context(config: Option<Rc<Config>>, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(CalloutHttp {
            config,
            mode: Vec::new(),
        }))
    }
}

kit::main!(Callout);

struct CalloutHttp {
    /// `None` only if the host creates streams without a successful configure.
    config: Option<Rc<Config>>,
    /// Value of the request's `x-callout` header (e.g. `deny`). Bytes, so a
    /// non-UTF-8 value cannot trap the SDK's `String` conversion.
    mode: Vec<u8>,
}

impl Context for CalloutHttp {
    fn on_http_call_response(
        &mut self,
        _token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(cfg) = self.config.clone() else {
            return;
        };
        // A failed call (timeout, reset) is delivered with no headers; don't
        // even ask for `:status` then.
        let status = if num_headers == 0 {
            None
        } else {
            self.get_http_call_response_header(":status")
        };
        let Some(status) = status else {
            self.set_http_request_header("x-callout-status", Some("failed"));
            self.resume_http_request();
            return;
        };
        if body_size > 0 {
            // Exercise proxy_get_buffer_bytes(HttpCallResponseBody); the
            // reported length is the host's body_size.
            let _ = self.get_http_call_response_body(0, body_size);
        }
        let origin = self
            .get_http_call_response_header_bytes("x-origin-id")
            .map_or_else(
                || "none".to_string(),
                |b| String::from_utf8_lossy(&b).into_owned(),
            );

        if self.mode == b"deny" {
            self.send_http_response(
                cfg.deny_status,
                vec![("x-callout-status", status.as_str())],
                Some(b"denied by callout\n"),
            );
            return;
        }
        self.set_http_request_header("x-callout-status", Some(&status));
        self.set_http_request_header("x-callout-body-len", Some(&body_size.to_string()));
        self.set_http_request_header("x-callout-origin", Some(&origin));
        self.resume_http_request();
    }
}

impl HttpContext for CalloutHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(cfg) = self.config.clone() else {
            return Action::Continue;
        };
        let Some(mode) = self.get_http_request_header_bytes("x-callout") else {
            return Action::Continue;
        };
        self.mode = mode;
        match self.dispatch_http_call(
            &cfg.upstream,
            vec![
                (":method", "GET"),
                (":path", cfg.path.as_str()),
                (":authority", "callout"),
                ("x-from-filter", "1"),
            ],
            None,
            vec![],
            Duration::from_millis(cfg.timeout_ms),
        ) {
            Ok(_token) => Action::Pause,
            Err(status) => {
                self.set_http_request_header("x-callout-error", Some(&format!("{status:?}")));
                Action::Continue
            }
        }
    }
}
