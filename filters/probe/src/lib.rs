//! `probe.wasm`: test filter for the hostcalls the other test filters do not
//! make, each with a deterministic, observable result. No configuration (any
//! config is accepted and ignored).
//!
//! `on_http_request_headers`, in this order:
//! 1. `proxy_get_log_level` -> `x-probe-log-level: <0..=5>`.
//! 2. `proxy_get_header_map_pairs` (request headers, read once before any
//!    edit) -> `x-probe-pairs: <number of pairs>`, and `x-probe-has-path: 1`
//!    if a pair is named `:path`.
//! 3. With request header `x-probe-set-pairs`: `proxy_set_header_map_pairs`
//!    replaces the whole request map with the current pairs (re-read, so 1-2
//!    are in it; pseudo-headers kept) minus every name starting with
//!    `x-probe-drop`, plus `x-probe-replaced: 1`.
//! 4. With request header `x-probe-close`: `proxy_close_stream` (request) and
//!    `Action::Pause`; nothing below runs.
//! 5. `proxy_set_effective_context(<own id>)` -> `x-probe-effective: ok` (or
//!    `err:<Status>`); `proxy_set_effective_context(999999)` ->
//!    `x-probe-effective-bad: err:BadArgument` (or `ok`).
//! 6. `proxy_get_buffer_bytes(PluginConfiguration, 0, usize::MAX)` ->
//!    `x-probe-config-len: <bytes, or none>`.
//! 7. `proxy_log(Warn, "probe: warn line <:path>")` (`<:path>` = `none` when
//!    absent).
//! 8. `proxy_done` -> `x-probe-done: ok`.
//! 9. `proxy_grpc_call("any", "svc", "m", no metadata, no message, 1s)` ->
//!    `x-probe-grpc: ok:<token>` or `err:<Status>`.
//! 10. `proxy_get_status` -> `x-probe-status: <code>` (message ignored).
//!
//! `on_http_response_headers`: `proxy_get_header_map_pairs` (response) ->
//! `x-probe-resp-pairs: <n>`; property `response.code` (little-endian i64) ->
//! `x-probe-resp-code: <n, or none>`.
//!
//! Header maps are read and written with the SDK's `*_bytes` variants (same
//! hostcalls) so a non-UTF-8 header value cannot trap the SDK's
//! `String::from_utf8(..).unwrap()`. The SDK panics (traps) on statuses it
//! does not expect: `proxy_get_log_level`, `proxy_close_stream`, `proxy_done`,
//! `proxy_get_status` and the header-map calls must answer `Ok`;
//! `proxy_set_effective_context` Ok/BadArgument; `proxy_grpc_call`
//! Ok/ParseFailure/InternalFailure; `proxy_get_buffer_bytes` Ok/NotFound.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel};
use std::rc::Rc;
use std::time::Duration;

/// A context id no host hands out in these tests.
const BAD_CONTEXT_ID: u32 = 999_999;
/// Request headers whose names start with this are dropped by `x-probe-set-pairs`.
const DROP_PREFIX: &str = "x-probe-drop";

struct Probe;

impl kit::Filter for Probe {
    const NAME: &'static str = "probe";
    const NO_CONFIG: bool = true;
    type Config = ();

    fn parse(_raw: Option<&[u8]>) -> Result<(), String> {
        Ok(())
    }

    fn http_context(_config: Option<Rc<()>>, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProbeHttp { context_id }))
    }
}

kit::main!(Probe);

struct ProbeHttp {
    context_id: u32,
}

/// `ok`, or `err:<Status Debug name>`.
fn ok_or_err<T>(r: Result<T, proxy_wasm::types::Status>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("err:{e:?}"),
    }
}

impl Context for ProbeHttp {
    fn on_done(&mut self) -> bool {
        true
    }
}

impl HttpContext for ProbeHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // 1. log level (the SDK traps on any status but Ok).
        let level = match hostcalls::get_log_level() {
            Ok(l) => (l as u32).to_string(),
            Err(e) => format!("err:{e:?}"),
        };
        // 2. all pairs, read before this filter edits anything.
        let pairs = self.get_http_request_headers_bytes();
        let path = pairs
            .iter()
            .find(|(k, _)| k == ":path")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        self.set_http_request_header("x-probe-log-level", Some(&level));
        self.set_http_request_header("x-probe-pairs", Some(&pairs.len().to_string()));
        if path.is_some() {
            self.set_http_request_header("x-probe-has-path", Some("1"));
        }

        // 3. replace the whole map.
        if self
            .get_http_request_header_bytes("x-probe-set-pairs")
            .is_some()
        {
            let current = self.get_http_request_headers_bytes();
            let mut new: Vec<(&str, &[u8])> = current
                .iter()
                .filter(|(k, _)| !k.to_ascii_lowercase().starts_with(DROP_PREFIX))
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            new.push(("x-probe-replaced", b"1"));
            self.set_http_request_headers_bytes(new);
        }

        // 4. reset the stream.
        if self
            .get_http_request_header_bytes("x-probe-close")
            .is_some()
        {
            // The SDK traps on any status but Ok.
            let _ = hostcalls::reset_http_request();
            return Action::Pause;
        }

        // 5. effective context: own id, then an unknown one (the SDK passes
        // BadArgument through and traps on any other error).
        let own = ok_or_err(hostcalls::set_effective_context(self.context_id));
        let bad = ok_or_err(hostcalls::set_effective_context(BAD_CONTEXT_ID));
        self.set_http_request_header("x-probe-effective", Some(&own));
        self.set_http_request_header("x-probe-effective-bad", Some(&bad));

        // 6. plugin configuration via proxy_get_buffer_bytes.
        let config_len = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        {
            Ok(Some(b)) => b.len().to_string(),
            Ok(None) | Err(_) => "none".to_string(),
        };
        self.set_http_request_header("x-probe-config-len", Some(&config_len));

        // 7. a warn-level log line.
        let shown = path.as_deref().unwrap_or("none");
        let _ = hostcalls::log(LogLevel::Warn, &format!("probe: warn line {shown}"));

        // 8. proxy_done (the SDK traps on any status but Ok).
        let done = ok_or_err(hostcalls::done());
        self.set_http_request_header("x-probe-done", Some(&done));

        // 9. gRPC call.
        let grpc = match hostcalls::dispatch_grpc_call(
            "any",
            "svc",
            "m",
            vec![],
            None,
            Duration::from_secs(1),
        ) {
            Ok(token) => format!("ok:{token}"),
            Err(e) => format!("err:{e:?}"),
        };
        self.set_http_request_header("x-probe-grpc", Some(&grpc));

        // 10. proxy_get_status: the code only.
        let status = match hostcalls::get_grpc_status() {
            Ok((code, _)) => code.to_string(),
            Err(e) => format!("err:{e:?}"),
        };
        self.set_http_request_header("x-probe-status", Some(&status));

        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let n = self.get_http_response_headers_bytes().len();
        self.set_http_response_header("x-probe-resp-pairs", Some(&n.to_string()));
        // The hostcall directly, so SerializationFailure / InternalFailure
        // count as `none` instead of trapping in `Context::get_property`.
        let code = match hostcalls::get_property(vec!["response", "code"]) {
            Ok(Some(b)) if b.len() == 8 => {
                let mut le = [0u8; 8];
                le.copy_from_slice(&b);
                i64::from_le_bytes(le).to_string()
            }
            _ => "none".to_string(),
        };
        self.set_http_response_header("x-probe-resp-code", Some(&code));
        Action::Continue
    }
}
