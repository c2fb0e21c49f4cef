//! The fleet store: state every Sluice node shares, on Redis (`[fleet]`), behind the
//! `sluice.fleet.*` foreign functions (`host::fleet` decodes them; this module runs them).
//!
//! One multiplexed connection per process and store ([`redis::aio::ConnectionManager`],
//! which reconnects on its own when Redis comes back), driven by a small runtime of its
//! own so that no worker thread owns it. Every operation is one round trip (counters
//! and compare-and-set are Lua scripts, sent by `EVALSHA`), bounded by `timeout_ms`.
//! After a failure to reach the store (not an error it answered) the store answers
//! `unavailable` at once for `backoff_ms`, so an outage costs requests no waiting; keys found over their limit are remembered until
//! their window ends and answered with no round trip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

use crate::host::collections::{
    collections, now_ms as now_unix_ms, Field, FieldOp, Pending, Record,
};
use crate::host::fleet::{FleetBackend, FleetFuture, FleetOp, FleetReply, FleetStatus};
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

/// A persistent-collection record (a hash: `v:NAME` values, `e:NAME` expiries in ms,
/// `_c` created, `_u` updated, `_n` update counter, `_t` timeout) changed by a batch of
/// changes and read back, on Redis's clock, in one round trip. ARGV: timeout_ms, commits,
/// then (kind, name, argument) per change: `s` set, `a` add, `d` delete, `e` expire
/// (seconds). Answers now, created, updated, counter, timeout, then name, value, expiry
/// (0: none) per live field.
const MERGE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local k = KEYS[1]
local function live(n)
  local e = tonumber(redis.call('HGET', k, 'e:' .. n) or '0')
  if e > 0 and e <= now then
    redis.call('HDEL', k, 'v:' .. n, 'e:' .. n)
    return nil
  end
  return redis.call('HGET', k, 'v:' .. n)
end
local commits = tonumber(ARGV[2])
local i = 3
while i + 2 <= #ARGV do
  local kind, n, a = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if kind == 's' then
    live(n)
    redis.call('HSET', k, 'v:' .. n, a)
  elseif kind == 'a' then
    local cur = tonumber(string.match(live(n) or '0', '^%s*([+-]?%d+)') or '0')
    redis.call('HSET', k, 'v:' .. n, string.format('%d', cur + tonumber(a)))
  elseif kind == 'd' then
    redis.call('HDEL', k, 'v:' .. n, 'e:' .. n)
  elseif kind == 'e' then
    if live(n) then
      redis.call('HSET', k, 'e:' .. n, now + tonumber(a) * 1000)
    end
  end
  i = i + 3
end
if commits > 0 then
  if redis.call('HEXISTS', k, '_c') == 0 then
    redis.call('HSET', k, '_c', now)
  end
  redis.call('HSET', k, '_u', now, '_t', ARGV[1])
  redis.call('HINCRBY', k, '_n', commits)
  redis.call('PEXPIRE', k, ARGV[1])
end
local all = redis.call('HGETALL', k)
local out = {now, 0, 0, 0, 0}
local vals, exps = {}, {}
for j = 1, #all, 2 do
  local f, v = all[j], all[j + 1]
  if f == '_c' then out[2] = tonumber(v)
  elseif f == '_u' then out[3] = tonumber(v)
  elseif f == '_n' then out[4] = tonumber(v)
  elseif f == '_t' then out[5] = tonumber(v)
  elseif string.sub(f, 1, 2) == 'v:' then vals[string.sub(f, 3)] = v
  elseif string.sub(f, 1, 2) == 'e:' then exps[string.sub(f, 3)] = tonumber(v)
  end
end
for n, v in pairs(vals) do
  local e = exps[n] or 0
  if e == 0 or e > now then
    table.insert(out, n)
    table.insert(out, v)
    table.insert(out, e)
  end
end
return out
";

/// Component guests' `sluice:edge/fleet` calls run here too, on the same connection.
impl FleetBackend for FleetStore {
    fn run(self: Arc<Self>, op: FleetOp) -> FleetFuture {
        Box::pin(self.answer(op))
    }
}

/// One store: a Redis server, its connection, and this node's memory of keys over
/// their limit.
pub struct FleetStore {
    cfg: FleetConfig,
    conn: ConnectionManager,
    incr: Script,
    sliding: Script,
    cas: Script,
    merge: Script,
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
    runtime().spawn(FleetStore::flush_loop(
        Arc::downgrade(&s),
        Duration::from_millis(cfg.collections_flush_ms.max(1)),
    ));
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
            merge: Script::new(MERGE),
            over: quick_cache::sync::Cache::new(cfg.over_limit_keys.max(1)),
            down_until: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// How long a collection record read from the store stays fresh.
    pub fn collections_refresh_ms(&self) -> u64 {
        self.cfg.collections_refresh_ms
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

    /// Runs `op` for a Proxy-Wasm filter: its reply (a failure included) as the body of a
    /// call response.
    pub async fn run(self: Arc<Self>, op: FleetOp) -> CallResult {
        reply(self.answer(op).await)
    }

    /// Runs `op`: its reply, a failure included (bounded by `timeout_ms`).
    pub async fn answer(self: Arc<Self>, op: FleetOp) -> FleetReply {
        let name = op.name();
        let m = metrics();
        let key = self.full_key(op.key());
        let now = self.now_ms();
        if let FleetOp::Incr { .. } | FleetOp::Sliding { .. } = op {
            if let Some((until, count)) = self.over.get(&key) {
                if until > now {
                    m.fleet_calls.with_label_values(&[name, "cached"]).inc();
                    return FleetReply::Counter {
                        count,
                        reset_ms: (until - now) as u32,
                        counted: false,
                    };
                }
                self.over.remove(&key);
            }
        }
        let r = match self.guarded(name, self.round_trip(&op, &key)).await {
            Ok(r) => r,
            Err(failed) => {
                if let FleetOp::Load { key: local } = &op {
                    // The filter goes on with its local copy; no other request waits on
                    // the store for this record until the next refresh.
                    collections().absorb(local, None, now_unix_ms());
                }
                failed
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
        r
    }

    /// Runs one round trip `fut` of operation `name` unless the store is backing off,
    /// bounded by `timeout_ms`, counted and timed; a failure starts the back-off and comes
    /// back as the reply the filter gets.
    async fn guarded<T>(
        &self,
        name: &'static str,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, FleetReply> {
        let m = metrics();
        if self.down_until.load(Ordering::Relaxed) > self.now_ms() {
            m.fleet_calls
                .with_label_values(&[name, "unavailable"])
                .inc();
            return Err(FleetReply::Failed(
                FleetStatus::Unavailable,
                "fleet store down".into(),
            ));
        }
        let started = Instant::now();
        let timeout = Duration::from_millis(self.cfg.timeout_ms);
        let out = tokio::time::timeout(timeout, fut).await;
        m.fleet_duration
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        match out {
            Ok(Ok(r)) => {
                m.fleet_calls.with_label_values(&[name, "ok"]).inc();
                Ok(r)
            }
            Ok(Err(e)) => {
                m.fleet_calls.with_label_values(&[name, "error"]).inc();
                tracing::warn!(op = name, error = %e, "fleet store call failed");
                // A store that answered is up: an error about one key's data (a filter
                // counting a value it wrote) must not make the node stop asking for
                // every filter's keys.
                if !answered(&e) {
                    self.backoff();
                }
                Err(FleetReply::Failed(FleetStatus::Error, e.to_string()))
            }
            Err(_) => {
                m.fleet_calls.with_label_values(&[name, "timeout"]).inc();
                tracing::warn!(
                    op = name,
                    timeout_ms = self.cfg.timeout_ms,
                    "fleet store call timed out"
                );
                self.backoff();
                Err(FleetReply::Failed(
                    FleetStatus::Timeout,
                    "fleet store timed out".into(),
                ))
            }
        }
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
            FleetOp::Load { key: local } => {
                let pending = collections().take_pending_for(local);
                // (a failure is absorbed by `run`, with the ones that never got here)
                let r = self.merge(&mut conn, key, pending.as_ref()).await?;
                collections().absorb(local, Some(r), now_unix_ms());
                FleetReply::Done
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

impl FleetStore {
    /// Writes `pending` (if any) to the record at `key` and reads it back ([`MERGE`]).
    async fn merge(
        &self,
        conn: &mut ConnectionManager,
        key: &[u8],
        pending: Option<&Pending>,
    ) -> redis::RedisResult<Record> {
        let mut inv = self.merge.key(key);
        inv.arg(pending.map_or(0, |p| p.timeout_ms));
        inv.arg(pending.map_or(0, |p| p.commits));
        for op in pending.iter().flat_map(|p| &p.ops) {
            match op {
                FieldOp::Set(n, v) => inv.arg("s").arg(n.as_slice()).arg(v.as_slice()),
                FieldOp::Add(n, d) => inv.arg("a").arg(n.as_slice()).arg(*d),
                FieldOp::Del(n) => inv.arg("d").arg(n.as_slice()).arg(""),
                FieldOp::Expire(n, secs) => inv.arg("e").arg(n.as_slice()).arg(*secs),
            };
        }
        let v: Vec<Value> = inv.invoke_async(conn).await?;
        record_from(&v).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "collection merge",
                format!("{} values", v.len()),
            ))
        })
    }

    /// Writes the persistent-collection changes queued by every filter of this process
    /// (write-behind: requests never wait for it), every `collections_flush_ms`. A batch
    /// the store does not take is dropped (the local copy keeps it) and counted.
    async fn flush_loop(store: std::sync::Weak<FleetStore>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(store) = store.upgrade() else { return };
            let pending = collections().take_pending();
            if pending.is_empty() {
                continue;
            }
            let batch = pending.into_iter().map(|p| {
                let store = store.clone();
                async move {
                    let key = store.full_key(&p.key);
                    let out = store
                        .guarded("flush", async {
                            let mut conn = store.conn.clone();
                            store.merge(&mut conn, &key, Some(&p)).await
                        })
                        .await;
                    collections().absorb(&p.key, out.ok(), now_unix_ms());
                }
            });
            futures::future::join_all(batch).await;
        }
    }
}

/// Reads [`MERGE`]'s answer.
fn record_from(v: &[Value]) -> Option<Record> {
    fn int(v: &Value) -> Option<u64> {
        match v {
            Value::Int(n) => Some((*n).max(0) as u64),
            Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
    fn bytes(v: &Value) -> Option<Vec<u8>> {
        match v {
            Value::BulkString(b) => Some(b.clone()),
            Value::Int(n) => Some(n.to_string().into_bytes()),
            _ => None,
        }
    }
    if v.len() < 5 || !(v.len() - 5).is_multiple_of(3) {
        return None;
    }
    // Expiries on Redis's clock, moved to this node's (clocks of a fleet differ a little).
    let redis_now = int(&v[0])?;
    let local_now = now_unix_ms();
    let mut r = Record {
        created_ms: int(&v[1])?,
        updated_ms: int(&v[2])?,
        counter: int(&v[3])?,
        timeout_ms: int(&v[4])?,
        ..Default::default()
    };
    for f in v[5..].chunks(3) {
        let e = int(&f[2])?;
        r.fields.insert(
            bytes(&f[0])?,
            Field {
                value: bytes(&f[1])?,
                expires_ms: (e > 0).then(|| local_now + e.saturating_sub(redis_now)),
            },
        );
    }
    Some(r)
}

/// Whether the error is the store's answer (`ERR ...`, `WRONGTYPE ...`), not a failure to
/// reach it.
fn answered(e: &redis::RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
    )
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
