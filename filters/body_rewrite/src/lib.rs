//! `body_rewrite.wasm`: buffers a request and/or response body and replaces
//! every occurrence of `from` with `to`.
//!
//! Config (each side optional; empty/missing config = no-op):
//! ```json
//! {"request": {"from": "a", "to": "b"}, "response": {"from": "x", "to": "y"}}
//! ```
//! On the response side `content-length` is removed in the headers phase (the
//! length may change). On the request side it is left alone: the host fixes
//! the request Content-Length after the body was rewritten.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use std::rc::Rc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rewrite {
    from: String,
    #[serde(default)]
    to: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    request: Option<Rewrite>,
    #[serde(default)]
    response: Option<Rewrite>,
}

fn parse_config(raw: Option<Vec<u8>>) -> Result<Config, String> {
    let cfg: Config = match raw {
        None => Config::default(),
        Some(b) if b.iter().all(u8::is_ascii_whitespace) => Config::default(),
        Some(b) => serde_json::from_slice(&b).map_err(|e| e.to_string())?,
    };
    for (side, rw) in [("request", &cfg.request), ("response", &cfg.response)] {
        if matches!(rw, Some(r) if r.from.is_empty()) {
            return Err(format!("{side}.from must not be empty"));
        }
    }
    Ok(cfg)
}

/// Byte-wise replace of every non-overlapping `from` with `to`.
fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(RewriteRoot { config: Rc::new(Config::default()) })
    });
}}

struct RewriteRoot {
    config: Rc<Config>,
}

impl Context for RewriteRoot {}

impl RootContext for RewriteRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        match parse_config(self.get_plugin_configuration()) {
            Ok(c) => {
                self.config = Rc::new(c);
                true
            }
            Err(e) => {
                let _ = hostcalls::log(
                    LogLevel::Error,
                    &format!("body_rewrite: invalid config: {e}"),
                );
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RewriteHttp {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct RewriteHttp {
    config: Rc<Config>,
}

impl Context for RewriteHttp {}

impl HttpContext for RewriteHttp {
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(rw) = &self.config.request else {
            return Action::Continue;
        };
        if !end_of_stream {
            return Action::Pause;
        }
        if let Some(body) = self.get_http_request_body(0, body_size) {
            let new = replace_all(&body, rw.from.as_bytes(), rw.to.as_bytes());
            if new != body {
                self.set_http_request_body(0, body_size, &new);
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.config.response.is_some() {
            self.set_http_response_header("content-length", None);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(rw) = &self.config.response else {
            return Action::Continue;
        };
        if !end_of_stream {
            return Action::Pause;
        }
        if let Some(body) = self.get_http_response_body(0, body_size) {
            let new = replace_all(&body, rw.from.as_bytes(), rw.to.as_bytes());
            if new != body {
                self.set_http_response_body(0, body_size, &new);
            }
        }
        Action::Continue
    }
}
