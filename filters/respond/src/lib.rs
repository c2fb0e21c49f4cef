//! `respond.wasm`: answers requests with a local response built from config.
//!
//! Config (all keys optional; empty/missing config = `200` with empty body):
//! ```json
//! {"status": 200, "body": "...", "headers": {"content-type": "text/plain"},
//!  "path_prefix": "/optional"}
//! ```
//! If `path_prefix` is set, only requests whose `:path` starts with it get the
//! local response; all other requests continue upstream untouched.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::rc::Rc;

fn default_status() -> u32 {
    200
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_status")]
    status: u32,
    #[serde(default)]
    body: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    path_prefix: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            status: default_status(),
            body: String::new(),
            headers: BTreeMap::new(),
            path_prefix: None,
        }
    }
}

fn parse_config(raw: Option<Vec<u8>>) -> Result<Config, String> {
    let cfg: Config = match raw {
        None => Config::default(),
        Some(b) if b.iter().all(u8::is_ascii_whitespace) => Config::default(),
        Some(b) => serde_json::from_slice(&b).map_err(|e| e.to_string())?,
    };
    if !(100..=599).contains(&cfg.status) {
        return Err(format!("status {} out of range 100..=599", cfg.status));
    }
    Ok(cfg)
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(RespondRoot { config: Rc::new(Config::default()) })
    });
}}

struct RespondRoot {
    config: Rc<Config>,
}

impl Context for RespondRoot {}

impl RootContext for RespondRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        match parse_config(self.get_plugin_configuration()) {
            Ok(c) => {
                self.config = Rc::new(c);
                true
            }
            Err(e) => {
                let _ = hostcalls::log(LogLevel::Error, &format!("respond: invalid config: {e}"));
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RespondHttp {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct RespondHttp {
    config: Rc<Config>,
}

impl Context for RespondHttp {}

impl HttpContext for RespondHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let cfg = &self.config;
        if let Some(prefix) = &cfg.path_prefix {
            let path = self.get_http_request_header(":path").unwrap_or_default();
            if !path.starts_with(prefix.as_str()) {
                return Action::Continue;
            }
        }
        let headers: Vec<(&str, &str)> = cfg
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = if cfg.body.is_empty() {
            None
        } else {
            Some(cfg.body.as_bytes())
        };
        self.send_http_response(cfg.status, headers, body);
        Action::Pause
    }
}
