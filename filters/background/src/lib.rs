//! `background.wasm`: test filter for the plugin lifecycle (issue #16), one module with
//! a `role` chosen by its configuration (JSON):
//!
//! - `{"role": "ticker", "period_ms": 20, "metric": "bg_ticks"}`: a background service
//!   like the SDK's `hello_world`: `on_vm_start` sets the tick period and each tick
//!   increments counter `metric` (so `/metrics` shows `sluice_wasm_<metric>_total`).
//!   Needs no traffic and no route.
//! - `{"role": "pause", "delay_ms": 200}`: pauses every request in
//!   `on_request_headers`; the root context's tick (every 10 ms) resumes each one once
//!   `delay_ms` passed, with `proxy_set_effective_context` to the stream and
//!   `proxy_continue_stream`, as Envoy filters do.
//! - `{"role": "stamp"}`: adds `x-stamp-ms` (host time, Unix ms) to the request in
//!   `on_request_headers`, so a test sees when a filter after a pausing one ran.
//! - `{"role": "calls", "upstream": "pool", "metric": "bg_calls"}`: dispatches an HTTP
//!   call (`GET /echo` on `upstream`) from the last request-body callback, the last
//!   response-body callback and `on_log`; each response delivered increments counter
//!   `<metric>_<phase>` (`request_body`, `response_body`, `log`).

use kit::log as say;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MetricType};
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Default, Deserialize, Clone)]
struct Config {
    #[serde(default)]
    role: String,
    #[serde(default)]
    period_ms: u64,
    #[serde(default)]
    metric: String,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    upstream: String,
}

/// Streams paused by the `pause` role, with when they paused.
type Paused = Rc<RefCell<Vec<(u32, SystemTime)>>>;

/// The configuration and the state the root shares with the streams.
struct Background {
    config: Rc<Config>,
    paused: Paused,
    /// The `ticker` role's counter.
    ticks: Option<u32>,
}

fn now() -> SystemTime {
    hostcalls::get_current_time().unwrap_or(UNIX_EPOCH)
}

fn counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

struct Filter;

impl kit::Filter for Filter {
    const NAME: &'static str = "background";
    const CONFIG_ERROR: &'static str = "bad configuration";
    const LOG_LEVEL: LogLevel = LogLevel::Info;
    type Config = Background;

    /// JSON; unlike the other filters, an empty configuration is an error.
    fn parse(raw: Option<&[u8]>) -> Result<Background, String> {
        let config: Config =
            serde_json::from_slice(raw.unwrap_or_default()).map_err(|e| e.to_string())?;
        Ok(Background {
            config: Rc::new(config),
            paused: Paused::default(),
            ticks: None,
        })
    }

    fn unconfigured() -> Option<Background> {
        Some(Background {
            config: Rc::new(Config::default()),
            paused: Paused::default(),
            ticks: None,
        })
    }

    fn configured(bg: &mut Background) -> Result<(), String> {
        // The SDK panics (traps) on any status but Ok here, as `set_tick_period` does.
        let tick = |ms| hostcalls::set_tick_period(Duration::from_millis(ms)).unwrap();
        match bg.config.role.as_str() {
            "ticker" => {
                bg.ticks = counter(&bg.config.metric);
                tick(bg.config.period_ms.max(1));
            }
            "pause" => tick(10),
            _ => {}
        }
        Ok(())
    }

    fn on_tick(bg: Option<&Rc<Background>>) {
        let Some(bg) = bg else { return };
        if let Some(id) = bg.ticks {
            let _ = hostcalls::increment_metric(id, 1);
            say(LogLevel::Info, "background: tick");
        }
        let due = Duration::from_millis(bg.config.delay_ms);
        let t = now();
        let ready: Vec<u32> = {
            let mut p = bg.paused.borrow_mut();
            let (ready, wait): (Vec<_>, Vec<_>) = p
                .drain(..)
                .partition(|(_, at)| t.duration_since(*at).unwrap_or_default() >= due);
            *p = wait;
            ready.into_iter().map(|(ctx, _)| ctx).collect()
        };
        for ctx in ready {
            if hostcalls::set_effective_context(ctx).is_ok() {
                let _ = hostcalls::resume_http_request();
            }
        }
    }

    fn http_context(bg: Option<Rc<Background>>, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let bg = bg?;
        Some(Box::new(Stream {
            id: context_id,
            config: bg.config.clone(),
            paused: bg.paused.clone(),
            calls: HashMap::new(),
        }))
    }
}

kit::main!(Filter);

struct Stream {
    id: u32,
    config: Rc<Config>,
    paused: Paused,
    calls: HashMap<u32, &'static str>,
}

impl Stream {
    fn call(&mut self, phase: &'static str) {
        if self.config.role != "calls" {
            return;
        }
        match self.dispatch_http_call(
            &self.config.upstream,
            vec![
                (":method", "GET"),
                (":path", "/echo"),
                (":authority", "callee"),
            ],
            None,
            vec![],
            Duration::from_secs(5),
        ) {
            Ok(token) => {
                self.calls.insert(token, phase);
            }
            Err(e) => say(
                LogLevel::Error,
                &format!("background: dispatch from {phase} failed: {e:?}"),
            ),
        }
    }
}

impl Context for Stream {
    fn on_http_call_response(&mut self, token: u32, _: usize, _: usize, _: usize) {
        let phase = self.calls.remove(&token).unwrap_or("unknown");
        if let Some(id) = counter(&format!("{}_{phase}", self.config.metric)) {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        match self.config.role.as_str() {
            "pause" => {
                self.paused.borrow_mut().push((self.id, now()));
                Action::Pause
            }
            "stamp" => {
                let ms = now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis();
                self.add_http_request_header("x-stamp-ms", &ms.to_string());
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, _: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            self.call("request_body");
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, _: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            self.call("response_body");
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        self.call("log");
    }
}
