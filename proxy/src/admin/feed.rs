//! The access log and the WAF's audit log as they happen, for `GET /admin/tail` (what
//! `sluice ctl tail` reads): the last [`CAPACITY`] lines of each, numbered, in memory.
//!
//! - Access lines are published by the proxy's logging hook ([`publish_access`]) while
//!   the access log is on or someone has tailed in the last [`WANTED_FOR`]: with no
//!   reader and no access log, a request pays one relaxed atomic load ([`wanted`]).
//! - WAF audit lines (`waf: {json}`, logged by the filter through `proxy_log`) are caught
//!   by a `tracing` layer ([`AuditLayer`]) and held until their request's access line
//!   comes (the same `request_id`), which gives them the route, method, path and final
//!   status; a line whose request logs nothing is published on its own after
//!   [`HOLD_FOR`].
//!
//! Readers poll with a cursor (`after`): each line has a sequence number, and a reader
//! that falls more than [`CAPACITY`] lines behind is told how many it missed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Lines kept per log.
pub const CAPACITY: usize = 4096;
/// How long after a tail request access lines keep being published without an access log.
pub const WANTED_FOR: Duration = Duration::from_secs(30);
/// How long a WAF line waits for its request's access line.
pub const HOLD_FOR: Duration = Duration::from_secs(2);

/// Which log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// One line per request (`sluice::access`).
    Access,
    /// One line per request the WAF flagged or blocked.
    Waf,
}

impl Log {
    /// `access` or `waf`.
    pub fn parse(name: &str) -> Option<Log> {
        match name {
            "access" => Some(Log::Access),
            "waf" => Some(Log::Waf),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Ring {
    /// Sequence number of the next line.
    next: u64,
    lines: VecDeque<(u64, serde_json::Value)>,
}

impl Ring {
    fn push(&mut self, v: serde_json::Value) {
        self.next += 1;
        self.lines.push_back((self.next, v));
        if self.lines.len() > CAPACITY {
            self.lines.pop_front();
        }
    }
}

#[derive(Default)]
struct Inner {
    access: Ring,
    waf: Ring,
    /// WAF lines waiting for their access line, by request id.
    held: HashMap<String, (Instant, serde_json::Value)>,
}

impl Inner {
    fn ring(&mut self, log: Log) -> &mut Ring {
        match log {
            Log::Access => &mut self.access,
            Log::Waf => &mut self.waf,
        }
    }

    /// Publishes held WAF lines older than [`HOLD_FOR`] as they are.
    fn expire(&mut self, now: Instant) {
        if self.held.is_empty() {
            return;
        }
        let old: Vec<String> = self
            .held
            .iter()
            .filter(|(_, (t, _))| now.duration_since(*t) >= HOLD_FOR)
            .map(|(k, _)| k.clone())
            .collect();
        for k in old {
            if let Some((_, v)) = self.held.remove(&k) {
                self.waf.push(v);
            }
        }
    }
}

struct Feed {
    inner: Mutex<Inner>,
    changed: tokio::sync::Notify,
    wanted: AtomicBool,
    /// Milliseconds since [`epoch`] until which access lines are wanted.
    wanted_until: AtomicU64,
}

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn feed() -> &'static Feed {
    static F: OnceLock<Feed> = OnceLock::new();
    F.get_or_init(|| Feed {
        inner: Mutex::new(Inner::default()),
        changed: tokio::sync::Notify::new(),
        wanted: AtomicBool::new(false),
        wanted_until: AtomicU64::new(0),
    })
}

fn lock() -> std::sync::MutexGuard<'static, Inner> {
    feed().inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a reader tailed recently (the proxy then publishes access lines even with the
/// access log off). One relaxed load when nobody tails.
pub fn wanted() -> bool {
    let f = feed();
    if !f.wanted.load(Relaxed) {
        return false;
    }
    let now = epoch().elapsed().as_millis() as u64;
    if now > f.wanted_until.load(Relaxed) {
        f.wanted.store(false, Relaxed);
        return false;
    }
    true
}

/// Records that a reader is tailing: access lines are published for [`WANTED_FOR`].
pub fn want() {
    let f = feed();
    let until = (epoch().elapsed() + WANTED_FOR).as_millis() as u64;
    f.wanted_until.store(until, Relaxed);
    f.wanted.store(true, Relaxed);
}

/// Publishes a request's access line (an object with at least `request_id`, `route`,
/// `status`), and the WAF line held for the same request, completed with its route,
/// method, path and status.
pub fn publish_access(line: serde_json::Value) {
    let mut inner = lock();
    let now = Instant::now();
    inner.expire(now);
    let held = line["request_id"]
        .as_str()
        .and_then(|id| inner.held.remove(id));
    if let Some((_, mut waf)) = held {
        if let Some(obj) = waf.as_object_mut() {
            for k in ["route", "method", "path"] {
                obj.insert(k.to_string(), line[k].clone());
            }
            obj.insert("response_status".into(), line["status"].clone());
        }
        inner.waf.push(waf);
    }
    inner.access.push(line);
    drop(inner);
    feed().changed.notify_waiters();
}

/// Holds a WAF audit line until its request's access line (see the module doc).
pub fn publish_waf(mut line: serde_json::Value, plugin: &str) {
    if let Some(obj) = line.as_object_mut() {
        obj.insert("plugin".into(), plugin.into());
        obj.insert("time_unix".into(), now_unix().into());
    }
    let mut inner = lock();
    let now = Instant::now();
    inner.expire(now);
    match line["request_id"].as_str().map(str::to_string) {
        Some(id) if !id.is_empty() => {
            if let Some((_, earlier)) = inner.held.insert(id, (now, line)) {
                inner.waf.push(earlier);
            }
        }
        _ => inner.waf.push(line),
    }
    drop(inner);
    feed().changed.notify_waiters();
}

/// Seconds since the Unix epoch, as a float.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What a reader gets.
#[derive(Debug, serde::Serialize)]
pub struct Page {
    /// The cursor for the next read.
    pub next: u64,
    /// Lines lost between `after` and the oldest line kept.
    pub missed: u64,
    /// The lines after `after`, oldest first.
    pub lines: Vec<serde_json::Value>,
}

fn read(log: Log, after: Option<u64>) -> Page {
    let mut inner = lock();
    inner.expire(Instant::now());
    let ring = inner.ring(log);
    let Some(after) = after else {
        return Page {
            next: ring.next,
            missed: 0,
            lines: Vec::new(),
        };
    };
    let oldest = ring.lines.front().map(|(s, _)| *s).unwrap_or(ring.next + 1);
    Page {
        next: ring.next,
        missed: oldest
            .saturating_sub(after + 1)
            .min(ring.next.saturating_sub(after)),
        lines: ring
            .lines
            .iter()
            .filter(|(s, _)| *s > after)
            .map(|(_, v)| v.clone())
            .collect(),
    }
}

/// The lines of `log` after `after` (none, and the current cursor, when `after` is
/// `None`), waiting up to `wait` for one to come.
pub async fn tail(log: Log, after: Option<u64>, wait: Duration) -> Page {
    want();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let changed = feed().changed.notified();
        let page = read(log, after);
        if !page.lines.is_empty() || after.is_none() {
            return page;
        }
        // Held WAF lines are published by a later read once they are old enough.
        let step = deadline.min(tokio::time::Instant::now() + HOLD_FOR / 2);
        if tokio::time::timeout_at(step, changed).await.is_err()
            && tokio::time::Instant::now() >= deadline
        {
            return read(log, after);
        }
    }
}

/// A `tracing` layer that takes the WAF's audit lines (`waf: {json}` logged by a filter,
/// target `sluice::filter`) into the feed.
pub struct AuditLayer;

#[derive(Default)]
struct Fields {
    message: Option<String>,
    plugin: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "plugin" => self.plugin = value.to_string(),
            "message" => self.message = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = Some(format!("{value:?}")),
            "plugin" => self.plugin = format!("{value:?}").trim_matches('"').to_string(),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for AuditLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "sluice::filter" {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let Some(json) = f.message.as_deref().and_then(|m| m.strip_prefix("waf: {")) else {
            return;
        };
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&format!("{{{json}")) {
            if v.get("action").is_some() {
                publish_waf(v, &f.plugin);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waf_lines_take_the_route_of_their_request_and_cursors_count_what_was_missed() {
        let start = read(Log::Waf, None).next;
        publish_waf(
            serde_json::json!({"request_id": "feed-test-1", "action": "block"}),
            "waf",
        );
        assert!(read(Log::Waf, Some(start)).lines.is_empty(), "held");
        publish_access(serde_json::json!({
            "request_id": "feed-test-1", "route": "r", "status": 403, "method": "GET", "path": "/x"
        }));
        let page = read(Log::Waf, Some(start));
        let line = page
            .lines
            .iter()
            .find(|l| l["request_id"] == "feed-test-1")
            .expect("published with its access line");
        assert_eq!(line["route"], "r");
        assert_eq!(line["response_status"], 403);
        let a = read(Log::Access, None).next;
        for i in 0..(CAPACITY + 10) {
            publish_access(serde_json::json!({"request_id": format!("n{i}")}));
        }
        let page = read(Log::Access, Some(a));
        assert_eq!(page.lines.len(), CAPACITY);
        assert!(page.missed >= 10, "{}", page.missed);
    }
}
