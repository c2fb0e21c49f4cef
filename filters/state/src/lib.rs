//! `state.wasm`: test filter for per-stream state shared between filters of a
//! chain (`proxy_set_property` / `proxy_get_property`) and for foreign
//! functions (`proxy_call_foreign_function`). One module, two roles.
//!
//! Config (`role` is required, so empty/missing config is invalid):
//! ```json
//! {"role": "writer" | "reader", "key": "team.decision"}
//! ```
//! `key` (default `team.decision`) is split on `.` into a property path.
//!
//! * writer: request headers: `set_property(key, "allow-<:path>")`;
//!   response headers: `x-writer-saw: <property key or none>`.
//! * reader: request headers: `x-state: <property key or none>`,
//!   `x-route-prop: <property sluice.route or none>`,
//!   `x-foreign: <sluice.echo("ping") as UTF-8, or err:<Status>>`,
//!   `x-foreign-missing: notfound` if `no.such.fn` answers `NotFound`
//!   (else `err:<Status>`, or `ok` if it unexpectedly succeeds);
//!   response headers: `x-reader-saw: <property key or none>`.
//!
//! Property values are read with `hostcalls::get_property`; a
//! SerializationFailure / InternalFailure status counts as missing (no trap),
//! non-UTF-8 bytes are converted lossily.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, Status};
use serde::Deserialize;
use std::rc::Rc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    Writer,
    Reader,
}

fn default_key() -> String {
    "team.decision".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    role: Role,
    #[serde(default = "default_key")]
    key: String,
}

struct Parsed {
    role: Role,
    path: Vec<String>,
}

/// A property as a string: missing / Err status = `none`.
fn property_or_none(path: &[&str]) -> String {
    match hostcalls::get_property(path.to_vec()).ok().flatten() {
        Some(b) => String::from_utf8_lossy(&b).into_owned(),
        None => "none".to_string(),
    }
}

struct State;

impl kit::Filter for State {
    const NAME: &'static str = "state";
    type Config = Parsed;

    fn parse(raw: Option<&[u8]>) -> Result<Parsed, String> {
        let cfg: Config = kit::json_required(raw, "role")?;
        let path: Vec<String> = cfg.key.split('.').map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("`key` {:?} has an empty path segment", cfg.key));
        }
        Ok(Parsed {
            role: cfg.role,
            path,
        })
    }

    fn http_context(config: Option<Rc<Parsed>>, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(StateHttp { config }))
    }
}

kit::main!(State);

struct StateHttp {
    /// `None` only if the host creates streams without a successful configure.
    config: Option<Rc<Parsed>>,
}

impl Context for StateHttp {}

impl HttpContext for StateHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(cfg) = self.config.clone() else {
            return Action::Continue;
        };
        let path: Vec<&str> = cfg.path.iter().map(String::as_str).collect();
        match cfg.role {
            Role::Writer => {
                let req_path = self.get_http_request_header(":path").unwrap_or_default();
                let value = format!("allow-{req_path}");
                // The SDK panics (traps) on any status but Ok here.
                self.set_property(path, Some(value.as_bytes()));
            }
            Role::Reader => {
                self.set_http_request_header("x-state", Some(&property_or_none(&path)));
                self.set_http_request_header(
                    "x-route-prop",
                    Some(&property_or_none(&["sluice", "route"])),
                );
                let foreign = match hostcalls::call_foreign_function("sluice.echo", Some(b"ping")) {
                    Ok(out) => String::from_utf8_lossy(&out.unwrap_or_default()).into_owned(),
                    Err(e) => format!("err:{e:?}"),
                };
                self.set_http_request_header("x-foreign", Some(&foreign));
                let missing = match hostcalls::call_foreign_function("no.such.fn", None) {
                    Err(Status::NotFound) => "notfound".to_string(),
                    Err(e) => format!("err:{e:?}"),
                    Ok(_) => "ok".to_string(),
                };
                self.set_http_request_header("x-foreign-missing", Some(&missing));
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(cfg) = self.config.clone() else {
            return Action::Continue;
        };
        let path: Vec<&str> = cfg.path.iter().map(String::as_str).collect();
        let header = match cfg.role {
            Role::Writer => "x-writer-saw",
            Role::Reader => "x-reader-saw",
        };
        self.set_http_response_header(header, Some(&property_or_none(&path)));
        Action::Continue
    }
}
