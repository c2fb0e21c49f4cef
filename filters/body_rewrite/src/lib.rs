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

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
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

struct BodyRewrite;

impl kit::Filter for BodyRewrite {
    const NAME: &'static str = "body_rewrite";
    type Config = Config;

    fn parse(raw: Option<&[u8]>) -> Result<Config, String> {
        let cfg: Config = kit::json_or_default(raw)?;
        for (side, rw) in [("request", &cfg.request), ("response", &cfg.response)] {
            if matches!(rw, Some(r) if r.from.is_empty()) {
                return Err(format!("{side}.from must not be empty"));
            }
        }
        Ok(cfg)
    }

    fn unconfigured() -> Option<Config> {
        Some(Config::default())
    }

    fn http_context(config: Option<Rc<Config>>, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RewriteHttp {
            config: config.unwrap_or_default(),
        }))
    }
}

kit::main!(BodyRewrite);

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
