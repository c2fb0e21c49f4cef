//! `queue.wasm`: test filter for shared queues, one module with two roles
//! (`proxy_register/resolve/enqueue/dequeue_shared_queue`, `proxy_on_queue_ready`).
//!
//! Config (`role` is required, so empty/missing config is invalid):
//! ```json
//! {"role": "producer" | "consumer", "queue": "q1", "vm_id": "<vm id of the consumer>"}
//! ```
//! `queue` defaults to `q1`, `vm_id` to `""` (only the producer uses it).
//!
//! * consumer: `on_configure` registers `queue`. `on_queue_ready` dequeues
//!   until the queue is empty; per item it increments shared data
//!   `queue.received` (decimal u64, CAS retry loop) and stores the item as
//!   shared data `queue.last`. Requests get `x-queue-received: <n or 0>` and
//!   `x-queue-last: <last item or none>`.
//! * producer: a request with `x-enqueue: V` resolves (`vm_id`, `queue`) and
//!   enqueues `V`, setting `x-enqueued: 1`; if the queue is not registered,
//!   `x-enqueued: no-queue`; if the enqueue fails, `x-enqueued: err:<Status>`.
//!   Requests without `x-enqueue` pass untouched.

use kit::log;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, Status};
use serde::Deserialize;
use std::rc::Rc;

const RECEIVED_KEY: &str = "queue.received";
const LAST_KEY: &str = "queue.last";
/// Attempts of the CAS increment loop before giving up.
const CAS_TRIES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    Producer,
    Consumer,
}

fn default_queue() -> String {
    "q1".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    role: Role,
    #[serde(default = "default_queue")]
    queue: String,
    #[serde(default)]
    vm_id: String,
}

/// Decimal u64 from a shared-data value; absent or unparsable = 0.
fn parse_count(v: Option<Vec<u8>>) -> u64 {
    v.and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

/// Shared-data `key` += 1 with a CAS retry loop.
fn increment(key: &str) -> Result<u64, Status> {
    for _ in 0..CAS_TRIES {
        let (value, cas) = hostcalls::get_shared_data(key)?;
        let next = parse_count(value).wrapping_add(1);
        match hostcalls::set_shared_data(key, Some(next.to_string().as_bytes()), cas) {
            Ok(()) => return Ok(next),
            Err(Status::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Status::CasMismatch)
}

struct Queue;

impl kit::Filter for Queue {
    const NAME: &'static str = "queue";
    type Config = Config;

    fn parse(raw: Option<&[u8]>) -> Result<Config, String> {
        let cfg: Config = kit::json_required(raw, "role")?;
        if cfg.queue.is_empty() {
            return Err("`queue` must not be empty".to_string());
        }
        Ok(cfg)
    }

    fn configured(cfg: &mut Config) -> Result<(), String> {
        if cfg.role == Role::Consumer {
            // The SDK panics (traps) on any status but Ok here, as `register_shared_queue` does.
            hostcalls::register_shared_queue(&cfg.queue).unwrap();
        }
        Ok(())
    }

    fn on_queue_ready(_config: Option<&Rc<Config>>, queue_id: u32) {
        loop {
            let item = match hostcalls::dequeue_shared_queue(queue_id) {
                Ok(Some(item)) => item,
                // Empty queue (the SDK maps `Empty` to `Ok(None)`).
                Ok(None) => break,
                Err(e) => {
                    log(LogLevel::Warn, &format!("queue: dequeue {queue_id}: {e:?}"));
                    break;
                }
            };
            if let Err(e) = increment(RECEIVED_KEY) {
                log(
                    LogLevel::Warn,
                    &format!("queue: increment {RECEIVED_KEY}: {e:?}"),
                );
            }
            if let Err(e) = hostcalls::set_shared_data(LAST_KEY, Some(&item), None) {
                log(LogLevel::Warn, &format!("queue: set {LAST_KEY}: {e:?}"));
            }
        }
    }

    fn http_context(config: Option<Rc<Config>>, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(QueueHttp { config }))
    }
}

kit::main!(Queue);

struct QueueHttp {
    /// `None` only if the host creates streams without a successful configure.
    config: Option<Rc<Config>>,
}

impl Context for QueueHttp {}

impl HttpContext for QueueHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(cfg) = self.config.clone() else {
            return Action::Continue;
        };
        match cfg.role {
            Role::Consumer => {
                let received = parse_count(self.get_shared_data(RECEIVED_KEY).0);
                let last = self.get_shared_data(LAST_KEY).0;
                let last = last.map_or_else(
                    || "none".to_string(),
                    |b| String::from_utf8_lossy(&b).into_owned(),
                );
                self.set_http_request_header("x-queue-received", Some(&received.to_string()));
                self.set_http_request_header("x-queue-last", Some(&last));
            }
            Role::Producer => {
                let Some(value) = self.get_http_request_header_bytes("x-enqueue") else {
                    return Action::Continue;
                };
                let result = match self.resolve_shared_queue(&cfg.vm_id, &cfg.queue) {
                    None => "no-queue".to_string(),
                    Some(id) => match self.enqueue_shared_queue(id, Some(&value)) {
                        Ok(()) => "1".to_string(),
                        Err(e) => format!("err:{e:?}"),
                    },
                };
                self.set_http_request_header("x-enqueued", Some(&result));
            }
        }
        Action::Continue
    }
}
