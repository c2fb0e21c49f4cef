//! `headers.wasm`: set / add / remove request and response headers, and
//! optionally append a tag to `x-sluice-chain` on both request and response
//! so tests can observe filter-chain ordering.
//!
//! Config (all keys optional; empty/missing config = no-op):
//! ```json
//! {"request":  {"set": {"k": "v"}, "add": {"k": "v"}, "remove": ["k"]},
//!  "response": {"set": {...}, "add": {...}, "remove": [...]},
//!  "chain_tag": "NAME"}
//! ```
//! Per side the order is: remove, then set, then add, then chain tag.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::rc::Rc;

const CHAIN_HEADER: &str = "x-sluice-chain";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderOps {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    request: HeaderOps,
    #[serde(default)]
    response: HeaderOps,
    #[serde(default)]
    chain_tag: Option<String>,
}

struct Headers;

impl kit::Filter for Headers {
    const NAME: &'static str = "headers";
    type Config = Config;

    fn parse(raw: Option<&[u8]>) -> Result<Config, String> {
        kit::json_or_default(raw)
    }

    fn unconfigured() -> Option<Config> {
        Some(Config::default())
    }

    fn http_context(config: Option<Rc<Config>>, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HeadersHttp {
            config: config.unwrap_or_default(),
        }))
    }
}

kit::main!(Headers);

struct HeadersHttp {
    config: Rc<Config>,
}

impl Context for HeadersHttp {}

fn append_tag(existing: Option<String>, tag: &str) -> String {
    match existing {
        Some(v) if !v.is_empty() => format!("{v},{tag}"),
        _ => tag.to_string(),
    }
}

impl HttpContext for HeadersHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let ops = &self.config.request;
        for k in &ops.remove {
            self.set_http_request_header(k, None);
        }
        for (k, v) in &ops.set {
            self.set_http_request_header(k, Some(v));
        }
        for (k, v) in &ops.add {
            self.add_http_request_header(k, v);
        }
        if let Some(tag) = &self.config.chain_tag {
            let v = append_tag(self.get_http_request_header(CHAIN_HEADER), tag);
            self.set_http_request_header(CHAIN_HEADER, Some(&v));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let ops = &self.config.response;
        for k in &ops.remove {
            self.set_http_response_header(k, None);
        }
        for (k, v) in &ops.set {
            self.set_http_response_header(k, Some(v));
        }
        for (k, v) in &ops.add {
            self.add_http_response_header(k, v);
        }
        if let Some(tag) = &self.config.chain_tag {
            let v = append_tag(self.get_http_response_header(CHAIN_HEADER), tag);
            self.set_http_response_header(CHAIN_HEADER, Some(&v));
        }
        Action::Continue
    }
}
