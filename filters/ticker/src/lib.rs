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
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, Status};
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

/// Decimal u64 from a shared-data value; absent or unparsable = 0.
fn parse_count(v: Option<Vec<u8>>) -> u64 {
    v.and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

struct Ticker;

impl kit::Filter for Ticker {
    const NAME: &'static str = "ticker";
    type Config = Config;

    fn parse(raw: Option<&[u8]>) -> Result<Config, String> {
        let cfg: Config = kit::json_or_default(raw)?;
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

    fn unconfigured() -> Option<Config> {
        Some(Config::default())
    }

    fn configured(config: &mut Config) -> Result<(), String> {
        // The SDK panics (traps) on any status but Ok here, as `set_tick_period` does.
        hostcalls::set_tick_period(Duration::from_millis(config.period_ms)).unwrap();
        Ok(())
    }

    fn on_tick(config: Option<&Rc<Config>>) {
        let Some(config) = config else { return };
        let key = &config.key;
        // Unwrapped as the SDK's `Context::get_shared_data` does.
        let (value, cas) = hostcalls::get_shared_data(key).unwrap();
        let next = parse_count(value).wrapping_add(1).to_string();
        match hostcalls::set_shared_data(key, Some(next.as_bytes()), cas) {
            Ok(()) | Err(Status::CasMismatch) => {}
            Err(e) => kit::log(LogLevel::Warn, &format!("ticker: set_shared_data: {e:?}")),
        }
    }

    fn http_context(config: Option<Rc<Config>>, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(TickerHttp {
            config: config.unwrap_or_default(),
        }))
    }
}

kit::main!(Ticker);

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
