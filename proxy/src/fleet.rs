//! The fleet store: state every Sluice node shares, on Redis (`[fleet]`), behind the
//! `sluice.fleet.*` foreign functions (`host::fleet` decodes them; this module runs them).
//!
//! One multiplexed connection per process and store ([`redis::aio::ConnectionManager`],
//! which reconnects on its own when Redis comes back), driven by a small runtime of its
//! own so that no worker thread owns it. Every operation is one round trip (counters
//! and compare-and-set are Lua scripts, sent by `EVALSHA`), bounded by `timeout_ms`.
//! After a failure the store answers `unavailable` at once for `backoff_ms`, so an
//! outage costs requests no waiting; keys found over their limit are remembered until
//! their window ends and answered with no round trip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

use crate::host::fleet::{FleetOp, FleetReply, FleetStatus};
use crate::host::{CallResult, HttpCallResponse};
use crate::metrics::metrics;
use crate::policy::FleetConfig;

/// Fixed window: the count after this hit and the milliseconds left in the window.
const INCR: &str = r"
local c = redis.call('INCR', KEYS[1])
local t = redis.call('PTTL', KEYS[1])
if t < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  t = tonumber(ARGV[1])
end
return {c, t}
";

/// Sliding window (the current fixed window plus the previous one weighted by how much
/// of it the sliding window still covers), on Redis's clock so every node agrees. A hit
/// that would go over the limit is not counted.
const SLIDING: &str = r"
local w = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local win = math.floor(ms / w)
local cur = KEYS[1] .. ':' .. win
local prev = tonumber(redis.call('GET', KEYS[1] .. ':' .. (win - 1)) or '0')
local c = tonumber(redis.call('GET', cur) or '0')
local left = (win + 1) * w - ms
local est = math.floor(prev * left / w) + c
if est >= limit then
  return {est, left, 0}
end
c = redis.call('INCR', cur)
if c == 1 then
  redis.call('PEXPIRE', cur, 2 * w)
end
return {est + 1, left, 1}
";

/// Compare-and-set: ARGV = expected present ('0'/'1'), expected, new, ttl_ms.
const CAS: &str = r"
local v = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if v then return 0 end
elseif v ~= ARGV[2] then
  return 0
end
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return 1
";

/// One store: a Redis server, its connection, and this node's memory of keys over
/// their limit.
pub struct FleetStore {
    cfg: FleetConfig,
    conn: ConnectionManager,
    incr: Script,
    sliding: Script,
    cas: Script,
    /// Keys over their limit: until when (ms since `epoch`), the count Redis gave.
    over: quick_cache::sync::Cache<Vec<u8>, (u64, u32)>,
    /// No round trip before this (ms since `epoch`): the store failed a moment ago.
    down_until: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for FleetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetStore")
            .field("redis", &self.cfg.redis)
            .finish()
    }
}

/// The runtime that drives the stores' connections (one thread, started on first use).
fn runtime() -> &'static tokio::runtime::Handle {
    static RT: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("sluice-fleet")
            .build()
            .expect("fleet runtime");
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("sluice-fleet".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .expect("fleet thread");
        handle
    })
}

/// The process's store for `cfg`: the same one (and connection) for every policy
/// generation that names the same configuration.
pub fn store(cfg: &FleetConfig) -> anyhow::Result<Arc<FleetStore>> {
    static STORES: Mutex<Vec<Arc<FleetStore>>> = Mutex::new(Vec::new());
    let mut stores = STORES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = stores.iter().find(|s| s.cfg == *cfg) {
        return Ok(s.clone());
    }
    let s = Arc::new(FleetStore::open(cfg)?);
    stores.push(s.clone());
    Ok(s)
}

impl FleetStore {
    fn open(cfg: &FleetConfig) -> anyhow::Result<FleetStore> {
        let client = redis::Client::open(cfg.redis.as_str())?;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(100))))
            .set_response_timeout(Some(timeout))
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(3);
        // The connection's tasks live on the fleet runtime, whichever thread calls.
        let _guard = runtime().enter();
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        tracing::info!(redis = %cfg.redis, timeout_ms = cfg.timeout_ms, "fleet store configured");
        Ok(FleetStore {
            cfg: cfg.clone(),
            conn,
            incr: Script::new(INCR),
            sliding: Script::new(SLIDING),
            cas: Script::new(CAS),
            over: quick_cache::sync::Cache::new(cfg.over_limit_keys.max(1)),
            down_until: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn full_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.cfg.prefix.len() + 1 + key.len());
        k.extend_from_slice(self.cfg.prefix.as_bytes());
        k.push(b':');
        k.extend_from_slice(key);
        k
    }

    /// Runs `op`: its reply (a failure included) as the body of a call response.
    pub async fn run(self: Arc<Self>, op: FleetOp) -> CallResult {
        let name = op.name();
        let m = metrics();
        let key = self.full_key(op.key());
        let now = self.now_ms();
        if let FleetOp::Incr { .. } | FleetOp::Sliding { .. } = op {
            if let Some((until, count)) = self.over.get(&key) {
                if until > now {
                    m.fleet_calls.with_label_values(&[name, "cached"]).inc();
                    return reply(FleetReply::Counter {
                        count,
                        reset_ms: (until - now) as u32,
                        counted: false,
                    });
                }
                self.over.remove(&key);
            }
        }
        if self.down_until.load(Ordering::Relaxed) > now {
            m.fleet_calls
                .with_label_values(&[name, "unavailable"])
                .inc();
            return reply(FleetReply::Failed(
                FleetStatus::Unavailable,
                "fleet store down".into(),
            ));
        }
        let started = Instant::now();
        let timeout = Duration::from_millis(self.cfg.timeout_ms);
        let out = tokio::time::timeout(timeout, self.round_trip(&op, &key)).await;
        m.fleet_duration
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        let r = match out {
            Ok(Ok(r)) => {
                m.fleet_calls.with_label_values(&[name, "ok"]).inc();
                r
            }
            Ok(Err(e)) => {
                m.fleet_calls.with_label_values(&[name, "error"]).inc();
                tracing::warn!(op = name, error = %e, "fleet store call failed");
                self.backoff();
                FleetReply::Failed(FleetStatus::Error, e.to_string())
            }
            Err(_) => {
                m.fleet_calls.with_label_values(&[name, "timeout"]).inc();
                tracing::warn!(
                    op = name,
                    timeout_ms = self.cfg.timeout_ms,
                    "fleet store call timed out"
                );
                self.backoff();
                FleetReply::Failed(FleetStatus::Timeout, "fleet store timed out".into())
            }
        };
        if let (
            FleetReply::Counter {
                count,
                reset_ms,
                counted,
            },
            FleetOp::Incr { limit, .. } | FleetOp::Sliding { limit, .. },
        ) = (&r, &op)
        {
            let over = match op {
                FleetOp::Incr { .. } => *count > *limit,
                _ => !*counted,
            };
            if over {
                // A sliding window's estimate falls as time passes: remember it for about
                // the time one hit takes to age out, not the whole window.
                let hold = match op {
                    FleetOp::Sliding { window_ms, .. } => {
                        (*reset_ms).min(window_ms / (*limit).max(1))
                    }
                    _ => *reset_ms,
                };
                if hold > 0 {
                    self.over.insert(key, (now + hold as u64, *count));
                }
            }
        }
        reply(r)
    }

    fn backoff(&self) {
        if self.cfg.backoff_ms > 0 {
            self.down_until
                .store(self.now_ms() + self.cfg.backoff_ms, Ordering::Relaxed);
        }
    }

    async fn round_trip(&self, op: &FleetOp, key: &[u8]) -> redis::RedisResult<FleetReply> {
        let mut conn = self.conn.clone();
        Ok(match op {
            FleetOp::Incr { window_ms, .. } => {
                let (count, ttl): (i64, i64) = self
                    .incr
                    .key(key)
                    .arg(*window_ms)
                    .invoke_async(&mut conn)
                    .await?;
                FleetReply::Counter {
                    count: clamp(count),
                    reset_ms: clamp(ttl),
                    counted: true,
                }
            }
            FleetOp::Sliding {
                window_ms, limit, ..
            } => {
                let (count, left, counted): (i64, i64, i64) = self
                    .sliding
                    .key(key)
                    .arg(*window_ms)
                    .arg(*limit)
                    .invoke_async(&mut conn)
                    .await?;
                FleetReply::Counter {
                    count: clamp(count),
                    reset_ms: clamp(left),
                    counted: counted == 1,
                }
            }
            FleetOp::Get { .. } => {
                let v: Value = redis::cmd("GET").arg(key).query_async(&mut conn).await?;
                match v {
                    Value::Nil => FleetReply::Value(None),
                    Value::BulkString(b) => FleetReply::Value(Some(b)),
                    other => {
                        return Err(redis::RedisError::from((
                            redis::ErrorKind::UnexpectedReturnType,
                            "GET",
                            format!("{other:?}"),
                        )))
                    }
                }
            }
            FleetOp::Set { value, ttl_ms, .. } => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(key).arg(value.as_slice());
                if *ttl_ms > 0 {
                    cmd.arg("PX").arg(*ttl_ms);
                }
                let _: Value = cmd.query_async(&mut conn).await?;
                FleetReply::Done
            }
            FleetOp::Cas {
                expected,
                new,
                ttl_ms,
                ..
            } => {
                let swapped: i64 = self
                    .cas
                    .key(key)
                    .arg(if expected.is_some() { "1" } else { "0" })
                    .arg(expected.as_deref().unwrap_or_default())
                    .arg(new.as_slice())
                    .arg(*ttl_ms)
                    .invoke_async(&mut conn)
                    .await?;
                FleetReply::Swapped(swapped == 1)
            }
        })
    }
}

fn clamp(n: i64) -> u32 {
    n.clamp(0, u32::MAX as i64) as u32
}

fn reply(r: FleetReply) -> CallResult {
    Ok(HttpCallResponse {
        body: r.encode(),
        ..Default::default()
    })
}
