//! `hostile.wasm`: test filter that misbehaves on purpose, for the
//! fault-isolation tests (traps, CPU deadlines, memory caps, refused
//! hostcalls, slow / failing configure).
//!
//! Config (`mode` is required, so empty/missing config is invalid):
//! ```json
//! {"mode": "<mode>", "path_prefix": "/bad", "start_ms": 0}
//! ```
//! `start_ms` (default 0) makes every VM start slowly, whatever the mode:
//! `on_configure` busy-waits that long first, as a WAF compiling its rules does
//! (the crash-loop and rebuild tests use it with `panic`).
//! `path_prefix` (default `/bad`) selects the requests to misbehave on: those
//! whose `:path` starts with it (bytewise; an empty prefix matches every
//! request with a `:path`). Every other request gets request header
//! `x-hostile: spared` and continues. In `slow_start` and `configure_panic`
//! no request is a target, so every request is spared.
//!
//! Modes (for matching requests):
//! * `panic`: `panic!` in `on_http_request_headers` (the SDK's panic hook
//!   logs it at Critical, then the module traps on `unreachable`).
//! * `loop`: endless loop in `on_http_request_headers`.
//! * `grow`: in `on_http_request_headers`, pushes 1 MiB chunks filled with
//!   `0xA5` into a global until an allocation fails (then `unreachable`).
//! * `huge_header`: adds up to 64 request headers `x-hostile-pad-<i>` of
//!   64 KiB each with raw `proxy_add_header_map_value`, stopping at the first
//!   non-Ok status; then adds `x-hostile-added: <number added>` (status
//!   ignored) and continues.
//! * `huge_body`: request headers continue; the body phase pauses until
//!   `end_of_stream`, then replaces the whole body with 64 MiB of `x` via raw
//!   `proxy_set_buffer_bytes`; request header `x-hostile-body: refused` on a
//!   non-Ok status, `accepted` on Ok; continues.
//! * `slow_start`: `on_configure` busy-waits ~2 s of
//!   `proxy_get_current_time_nanoseconds` time, then succeeds.
//! * `configure_panic`: `panic!` in `on_configure`.
//! * `response_panic`: requests continue; `panic!` in
//!   `on_http_response_headers`.
//!
//! The SDK 0.2.5 `hostcalls::*` wrappers panic on any non-Ok status, so the
//! calls whose refusal is part of the test are made through this crate's own
//! imports of the same `env.proxy_*` functions.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use serde::Deserialize;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Raw imports (same module/name/wasm type as the SDK's), answering the
/// status as a plain `u32` so a refusal is not a trap.
mod raw {
    #[link(wasm_import_module = "env")]
    extern "C" {
        pub fn proxy_add_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_set_buffer_bytes(
            buffer_type: u32,
            start: usize,
            size: usize,
            buffer_data: *const u8,
            buffer_size: usize,
        ) -> u32;
    }
}

const STATUS_OK: u32 = 0;

/// `proxy_add_header_map_value` on the request headers; `Err(status)` if the host
/// does not answer Ok.
fn add_request_header(name: &str, value: &[u8]) -> Result<(), u32> {
    // SAFETY: pointers and lengths describe live slices for the whole call.
    let status = unsafe {
        raw::proxy_add_header_map_value(
            MapType::HttpRequestHeaders as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(status)
    }
}

/// `proxy_set_buffer_bytes` on the request body; `Err(status)` if not Ok.
fn set_request_body(start: usize, size: usize, data: &[u8]) -> Result<(), u32> {
    // SAFETY: pointer and length describe a live slice for the whole call.
    let status = unsafe {
        raw::proxy_set_buffer_bytes(
            BufferType::HttpRequestBody as u32,
            start,
            size,
            data.as_ptr(),
            data.len(),
        )
    };
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(status)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Panic,
    Loop,
    Grow,
    HugeHeader,
    HugeBody,
    SlowStart,
    ConfigurePanic,
    ResponsePanic,
}

impl Mode {
    /// Whether any request can be a target (false: every request is spared).
    fn targets_requests(self) -> bool {
        !matches!(self, Mode::SlowStart | Mode::ConfigurePanic)
    }
}

fn default_path_prefix() -> String {
    "/bad".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    mode: Mode,
    #[serde(default = "default_path_prefix")]
    path_prefix: String,
    #[serde(default)]
    start_ms: u64,
}

/// How long `slow_start` keeps `on_configure` busy.
const SLOW_START: Duration = Duration::from_secs(2);
/// `huge_header`: how many headers, and the size of each value.
const HUGE_HEADER_COUNT: usize = 64;
const HUGE_HEADER_BYTES: usize = 64 << 10;
/// `huge_body`: size of the replacement body.
const HUGE_BODY_BYTES: usize = 64 << 20;
/// `grow`: size of one chunk.
const GROW_CHUNK_BYTES: usize = 1 << 20;

/// Where `grow` keeps its chunks, so they stay reachable.
static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Spins forever; `black_box` keeps the optimizer from removing the loop.
fn spin_forever() -> ! {
    let mut counter: u64 = 0;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Allocates and touches 1 MiB chunks until an allocation fails (which aborts,
/// i.e. traps on `unreachable`). The lock is taken per chunk, so a trap during
/// the allocation leaves it free.
fn grow_forever() -> ! {
    loop {
        let chunk = black_box(vec![0xA5u8; GROW_CHUNK_BYTES]);
        let mut hoard = HOARD.lock().unwrap_or_else(PoisonError::into_inner);
        hoard.push(chunk);
        black_box(&mut *hoard);
    }
}

/// Spins for `d` of `proxy_get_current_time_nanoseconds` time.
fn busy_wait(d: Duration) {
    // The SDK's `get_current_time` panics (traps) on any status but Ok, as this does.
    let now = || hostcalls::get_current_time().unwrap();
    let start = now();
    while now().duration_since(start).map_or(true, |e| e < d) {}
}

struct Hostile;

impl kit::Filter for Hostile {
    const NAME: &'static str = "hostile";
    type Config = Config;

    fn parse(raw: Option<&[u8]>) -> Result<Config, String> {
        kit::json_required(raw, "mode")
    }

    fn configured(cfg: &mut Config) -> Result<(), String> {
        if cfg.start_ms > 0 {
            busy_wait(Duration::from_millis(cfg.start_ms));
        }
        match cfg.mode {
            Mode::ConfigurePanic => panic!("hostile filter panics in on_configure on purpose"),
            Mode::SlowStart => busy_wait(SLOW_START),
            _ => {}
        }
        Ok(())
    }

    fn http_context(config: Option<Rc<Config>>, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HostileHttp {
            config,
            target: false,
        }))
    }
}

kit::main!(Hostile);

struct HostileHttp {
    /// `None` only if the host creates streams without a successful configure.
    config: Option<Rc<Config>>,
    /// This request's `:path` matched (set in the request-headers phase).
    target: bool,
}

impl Context for HostileHttp {}

impl HttpContext for HostileHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(cfg) = self.config.clone() else {
            return Action::Continue;
        };
        self.target = cfg.mode.targets_requests()
            && self
                .get_http_request_header_bytes(":path")
                .is_some_and(|p| p.starts_with(cfg.path_prefix.as_bytes()));
        if !self.target {
            self.set_http_request_header("x-hostile", Some("spared"));
            return Action::Continue;
        }
        match cfg.mode {
            Mode::Panic => panic!("hostile filter panics on purpose"),
            Mode::Loop => spin_forever(),
            Mode::Grow => grow_forever(),
            Mode::HugeHeader => {
                let value = vec![b'h'; HUGE_HEADER_BYTES];
                let mut added = 0usize;
                for i in 0..HUGE_HEADER_COUNT {
                    if add_request_header(&format!("x-hostile-pad-{i}"), &value).is_err() {
                        break;
                    }
                    added += 1;
                }
                let _ = add_request_header("x-hostile-added", added.to_string().as_bytes());
                Action::Continue
            }
            Mode::HugeBody | Mode::ResponsePanic | Mode::SlowStart | Mode::ConfigurePanic => {
                Action::Continue
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let huge_body = self
            .config
            .as_ref()
            .is_some_and(|c| c.mode == Mode::HugeBody);
        if !(huge_body && self.target) {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let data = vec![b'x'; HUGE_BODY_BYTES];
        let verdict = match set_request_body(0, body_size, &data) {
            Ok(()) => "accepted",
            Err(_) => "refused",
        };
        self.set_http_request_header("x-hostile-body", Some(verdict));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let response_panic = self
            .config
            .as_ref()
            .is_some_and(|c| c.mode == Mode::ResponsePanic);
        if response_panic && self.target {
            panic!("hostile filter panics in on_http_response_headers on purpose");
        }
        Action::Continue
    }
}
