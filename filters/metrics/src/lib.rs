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

use kit::log;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MetricType};
use serde::Deserialize;
use std::rc::Rc;

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

#[derive(Debug, Clone, Copy)]
struct MetricIds {
    requests: u32,
    inflight: u32,
    body_bytes: u32,
}

/// The configuration and, once configured, the metrics it defined.
struct Configured {
    prefix: String,
    ids: Option<MetricIds>,
}

struct Metrics;

impl kit::Filter for Metrics {
    const NAME: &'static str = "metrics";
    type Config = Configured;

    fn parse(raw: Option<&[u8]>) -> Result<Configured, String> {
        let cfg: Config = kit::json_or_default(raw)?;
        if cfg.prefix.is_empty() {
            return Err("`prefix` must not be empty".to_string());
        }
        Ok(Configured {
            prefix: cfg.prefix,
            ids: None,
        })
    }

    fn configured(cfg: &mut Configured) -> Result<(), String> {
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
        cfg.ids = Some(ids.map_err(|e| format!("define_metric: {e:?}"))?);
        Ok(())
    }

    fn http_context(
        config: Option<Rc<Configured>>,
        _context_id: u32,
    ) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(MetricsHttp {
            ids: config.and_then(|c| c.ids),
            inflight: false,
            body_bytes: None,
        }))
    }
}

kit::main!(Metrics);

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
