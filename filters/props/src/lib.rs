//! `props.wasm`: test filter exercising host properties, logging and time.
//!
//! In `on_http_request_headers` it copies these properties into request
//! headers (a header is only set if the property exists and is UTF-8):
//!   request.path   -> x-prop-path
//!   request.method -> x-prop-method
//!   source.address -> x-prop-source
//!   plugin_name    -> x-prop-plugin
//!   request.host   -> x-prop-host
//!   request.scheme -> x-prop-scheme
//!   request.protocol -> x-prop-protocol
//! It logs one info line via `proxy_log`, and sets `x-prop-time-ok: 1` if
//! `proxy_get_current_time_nanoseconds` is after 2020-01-01T00:00:00Z.
//! No configuration (any config is accepted and ignored).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

/// 2020-01-01T00:00:00Z in seconds since the Unix epoch.
const Y2020: u64 = 1_577_836_800;

const PROPS: [(&[&str], &str); 7] = [
    (&["request", "path"], "x-prop-path"),
    (&["request", "method"], "x-prop-method"),
    (&["source", "address"], "x-prop-source"),
    (&["plugin_name"], "x-prop-plugin"),
    (&["request", "host"], "x-prop-host"),
    (&["request", "scheme"], "x-prop-scheme"),
    (&["request", "protocol"], "x-prop-protocol"),
];

struct Props;

impl kit::Filter for Props {
    const NAME: &'static str = "props";
    const NO_CONFIG: bool = true;
    type Config = ();

    fn parse(_raw: Option<&[u8]>) -> Result<(), String> {
        Ok(())
    }

    fn http_context(_config: Option<Rc<()>>, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(PropsHttp))
    }
}

kit::main!(Props);

struct PropsHttp;

impl Context for PropsHttp {}

impl HttpContext for PropsHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let mut seen = Vec::new();
        for (path, header) in PROPS {
            // Use the hostcall directly so a SerializationFailure /
            // InternalFailure status is treated as "missing" instead of a trap.
            let value = hostcalls::get_property(path.to_vec()).ok().flatten();
            if let Some(v) = value.and_then(|b| String::from_utf8(b).ok()) {
                self.set_http_request_header(header, Some(&v));
                seen.push(format!("{}={}", path.join("."), v));
            }
        }
        let now = self.get_current_time();
        if now > UNIX_EPOCH + Duration::from_secs(Y2020) {
            self.set_http_request_header("x-prop-time-ok", Some("1"));
        }
        let _ = hostcalls::log(LogLevel::Info, &format!("props: {}", seen.join(" ")));
        Action::Continue
    }
}
