//! `metrics.wasm`: test filter for metrics (`proxy_define_metric`,
//! `proxy_increment_metric`, `proxy_record_metric`, `proxy_get_metric`).
//!
//! Config (all keys optional; empty/missing config = defaults):
//! ```json
//! {"prefix": "demo"}
//! ```
//! `on_configure` defines counter `<prefix>_requests`, gauge
//! `<prefix>_inflight` and histogram `<prefix>_body_bytes`. Per request:
//! request headers: counter +1, gauge +1, request header
//! `x-metric-requests: <get_metric(counter) after the increment>`;
//! log: gauge -1 and the request's `content-length` (0 if absent/invalid)
//! recorded in the histogram.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use serde::Deserialize;

fn default_prefix() -> String {
    "demo".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_prefix")]
    prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            prefix: default_prefix(),
        }
    }
}

fn parse_config(raw: Option<Vec<u8>>) -> Result<Config, String> {
    let cfg: Config = match raw {
        None => Config::default(),
        Some(b) if b.iter().all(u8::is_ascii_whitespace) => Config::default(),
        Some(b) => serde_json::from_slice(&b).map_err(|e| e.to_string())?,
    };
    if cfg.prefix.is_empty() {
        return Err("`prefix` must not be empty".to_string());
    }
    Ok(cfg)
}

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

#[derive(Debug, Clone, Copy)]
struct MetricIds {
    requests: u32,
    inflight: u32,
    body_bytes: u32,
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(MetricsRoot { ids: None }) });
}}

struct MetricsRoot {
    ids: Option<MetricIds>,
}

impl Context for MetricsRoot {}

impl RootContext for MetricsRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let cfg = match parse_config(self.get_plugin_configuration()) {
            Ok(c) => c,
            Err(e) => {
                log(LogLevel::Error, &format!("metrics: invalid config: {e}"));
                return false;
            }
        };
        let p = &cfg.prefix;
        // The SDK panics (traps) on any status but Ok here.
        let define = |t, name: String| hostcalls::define_metric(t, &name);
        let ids = (|| {
            Ok::<_, proxy_wasm::types::Status>(MetricIds {
                requests: define(MetricType::Counter, format!("{p}_requests"))?,
                inflight: define(MetricType::Gauge, format!("{p}_inflight"))?,
                body_bytes: define(MetricType::Histogram, format!("{p}_body_bytes"))?,
            })
        })();
        match ids {
            Ok(ids) => {
                self.ids = Some(ids);
                true
            }
            Err(e) => {
                log(LogLevel::Error, &format!("metrics: define_metric: {e:?}"));
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(MetricsHttp {
            ids: self.ids,
            inflight: false,
            body_bytes: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct MetricsHttp {
    /// `None` only if the host creates streams without a successful configure.
    ids: Option<MetricIds>,
    /// The gauge was incremented for this request (so decrement it in on_log).
    inflight: bool,
    /// Request `content-length` (0 if absent/invalid), set in request headers.
    body_bytes: Option<u64>,
}

impl Context for MetricsHttp {}

impl HttpContext for MetricsHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(ids) = self.ids else {
            return Action::Continue;
        };
        let len = self
            .get_http_request_header_bytes("content-length")
            .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        self.body_bytes = Some(len);
        if let Err(e) = hostcalls::increment_metric(ids.requests, 1) {
            log(
                LogLevel::Warn,
                &format!("metrics: increment requests: {e:?}"),
            );
        }
        match hostcalls::increment_metric(ids.inflight, 1) {
            Ok(()) => self.inflight = true,
            Err(e) => log(
                LogLevel::Warn,
                &format!("metrics: increment inflight: {e:?}"),
            ),
        }
        let requests = match hostcalls::get_metric(ids.requests) {
            Ok(n) => n.to_string(),
            Err(e) => format!("err:{e:?}"),
        };
        self.set_http_request_header("x-metric-requests", Some(&requests));
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(ids) = self.ids else { return };
        if self.inflight {
            self.inflight = false;
            if let Err(e) = hostcalls::increment_metric(ids.inflight, -1) {
                log(
                    LogLevel::Warn,
                    &format!("metrics: decrement inflight: {e:?}"),
                );
            }
        }
        if let Some(len) = self.body_bytes.take() {
            if let Err(e) = hostcalls::record_metric(ids.body_bytes, len) {
                log(
                    LogLevel::Warn,
                    &format!("metrics: record body_bytes: {e:?}"),
                );
            }
        }
    }
}
