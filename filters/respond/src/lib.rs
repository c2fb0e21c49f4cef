//! `respond.wasm`: answers requests with a local response built from config.
//!
//! Config (all keys optional; empty/missing config = `200` with empty body):
//! ```json
//! {"status": 200, "body": "...", "headers": {"content-type": "text/plain"},
//!  "path_prefix": "/optional"}
//! ```
//! If `path_prefix` is set, only requests whose `:path` starts with it get the
//! local response; all other requests continue upstream untouched.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
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

struct Respond;

impl kit::Filter for Respond {
    const NAME: &'static str = "respond";
    type Config = Config;

    fn parse(raw: Option<&[u8]>) -> Result<Config, String> {
        let cfg: Config = kit::json_or_default(raw)?;
        if !(100..=599).contains(&cfg.status) {
            return Err(format!("status {} out of range 100..=599", cfg.status));
        }
        Ok(cfg)
    }

    fn unconfigured() -> Option<Config> {
        Some(Config::default())
    }

    fn http_context(config: Option<Rc<Config>>, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RespondHttp {
            config: config.unwrap_or_default(),
        }))
    }
}

kit::main!(Respond);

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
