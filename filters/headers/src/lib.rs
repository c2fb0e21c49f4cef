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

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
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

fn parse_config(raw: Option<Vec<u8>>) -> Result<Config, String> {
    match raw {
        None => Ok(Config::default()),
        Some(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(Config::default()),
        Some(b) => serde_json::from_slice(&b).map_err(|e| e.to_string()),
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(HeadersRoot { config: Rc::new(Config::default()) })
    });
}}

struct HeadersRoot {
    config: Rc<Config>,
}

impl Context for HeadersRoot {}

impl RootContext for HeadersRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        match parse_config(self.get_plugin_configuration()) {
            Ok(c) => {
                self.config = Rc::new(c);
                true
            }
            Err(e) => {
                let _ = hostcalls::log(LogLevel::Error, &format!("headers: invalid config: {e}"));
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HeadersHttp {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

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
