//! `ticker.wasm`: test filter for timers and shared data
//! (`proxy_set_tick_period_milliseconds`, `proxy_on_tick`,
//! `proxy_get/set_shared_data` with CAS).
//!
//! Config (all keys optional; empty/missing config = defaults):
//! ```json
//! {"period_ms": 50, "key": "ticks"}
//! ```
//! `on_configure` sets the tick period. Each tick reads shared data `key`
//! (decimal u64; absent or unparsable = 0) and writes back `+1` with the CAS
//! it read (a `CasMismatch` is ignored: that tick is lost). Every request gets
//! `x-ticks: <current value of key, or 0>`.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};
use serde::Deserialize;
use std::rc::Rc;
use std::time::Duration;

fn default_period_ms() -> u64 {
    50
}
fn default_key() -> String {
    "ticks".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_period_ms")]
    period_ms: u64,
    #[serde(default = "default_key")]
    key: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            period_ms: default_period_ms(),
            key: default_key(),
        }
    }
}

fn parse_config(raw: Option<Vec<u8>>) -> Result<Config, String> {
    let cfg: Config = match raw {
        None => Config::default(),
        Some(b) if b.iter().all(u8::is_ascii_whitespace) => Config::default(),
        Some(b) => serde_json::from_slice(&b).map_err(|e| e.to_string())?,
    };
    // The ABI carries the period as u32 milliseconds; 0 would disable ticks.
    if !(1..=u64::from(u32::MAX)).contains(&cfg.period_ms) {
        return Err(format!(
            "`period_ms` {} out of range 1..=4294967295",
            cfg.period_ms
        ));
    }
    if cfg.key.is_empty() {
        return Err("`key` must not be empty".to_string());
    }
    Ok(cfg)
}

/// Decimal u64 from a shared-data value; absent or unparsable = 0.
fn parse_count(v: Option<Vec<u8>>) -> u64 {
    v.and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(TickerRoot { config: Rc::new(Config::default()) })
    });
}}

struct TickerRoot {
    config: Rc<Config>,
}

impl Context for TickerRoot {}

impl RootContext for TickerRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        match parse_config(self.get_plugin_configuration()) {
            Ok(c) => {
                self.set_tick_period(Duration::from_millis(c.period_ms));
                self.config = Rc::new(c);
                true
            }
            Err(e) => {
                let _ = hostcalls::log(LogLevel::Error, &format!("ticker: invalid config: {e}"));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let key = &self.config.key;
        let (value, cas) = self.get_shared_data(key);
        let next = parse_count(value).wrapping_add(1).to_string();
        match self.set_shared_data(key, Some(next.as_bytes()), cas) {
            Ok(()) | Err(Status::CasMismatch) => {}
            Err(e) => {
                let _ = hostcalls::log(LogLevel::Warn, &format!("ticker: set_shared_data: {e:?}"));
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(TickerHttp {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct TickerHttp {
    config: Rc<Config>,
}

impl Context for TickerHttp {}

impl HttpContext for TickerHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (value, _cas) = self.get_shared_data(&self.config.key);
        self.set_http_request_header("x-ticks", Some(&parse_count(value).to_string()));
        Action::Continue
    }
}
