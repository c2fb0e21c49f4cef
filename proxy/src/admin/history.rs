//! The last minutes of a few counters, for the status page's "over the last minutes"
//! (Prometheus keeps the long history): every [`EVERY`] a sampler thread records the
//! WAF's blocked and flagged totals and the request total; [`recent`] answers the
//! increase per interval over the last [`KEEP`] samples.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::stats;

/// How often the counters are sampled.
pub const EVERY: Duration = Duration::from_secs(10);
/// Samples kept (10 minutes).
pub const KEEP: usize = 60;

#[derive(Debug, Clone, Copy)]
struct Sample {
    unix: f64,
    blocked: i64,
    flagged: i64,
    requests: u64,
}

fn samples() -> &'static Mutex<VecDeque<Sample>> {
    static S: OnceLock<Mutex<VecDeque<Sample>>> = OnceLock::new();
    S.get_or_init(Default::default)
}

fn take() -> Sample {
    let families = crate::metrics::metrics().gather();
    Sample {
        unix: super::feed::now_unix(),
        blocked: stats::waf_counter("waf_blocked_total"),
        flagged: stats::waf_counter("waf_flagged_total"),
        requests: stats::requests_total(&families),
    }
}

fn record(s: Sample) {
    let mut q = samples().lock().unwrap_or_else(|e| e.into_inner());
    q.push_back(s);
    while q.len() > KEEP + 1 {
        q.pop_front();
    }
}

/// Starts the sampler thread (once per process).
pub fn start() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        record(take());
        let spawned = std::thread::Builder::new()
            .name("sluice-history".into())
            .spawn(|| loop {
                std::thread::sleep(EVERY);
                record(take());
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no history sampler: the status page shows totals only");
        }
    });
}

/// Per interval, oldest first: its end (Unix seconds) and how many requests were
/// blocked, flagged and served in it; the last interval runs up to now.
pub fn recent() -> serde_json::Value {
    let mut q: Vec<Sample> = samples()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    q.push(take());
    let rows: Vec<_> = q
        .windows(2)
        .map(|w| {
            serde_json::json!({
                "end_unix": w[1].unix,
                "seconds": w[1].unix - w[0].unix,
                "blocked": (w[1].blocked - w[0].blocked).max(0),
                "flagged": (w[1].flagged - w[0].flagged).max(0),
                "requests": w[1].requests.saturating_sub(w[0].requests),
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}
