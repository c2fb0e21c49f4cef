//! The swap: validates a new policy into a snapshot and publishes it atomically, keeps
//! the last good snapshots for rollback, and records every attempt. Triggered by the
//! admin API, SIGHUP, or (opt-in) a watch of the policy file and its modules.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::policy::{Diagnostic, Policy, PolicyErrors};
use crate::snapshot::{Live, Snapshot};

/// How many earlier snapshots are kept for rollback.
pub const HISTORY: usize = 2;

/// What happened to swaps so far.
#[derive(Debug, Clone, Default)]
pub struct SwapStats {
    /// Successful swaps (reloads and rollbacks).
    pub successes: u64,
    /// Rejected policies.
    pub failures: u64,
    /// Time of the last successful swap.
    pub last_swap: Option<SystemTime>,
    /// Errors of the last rejected policy.
    pub last_error: Option<String>,
    /// Time the last successful reload took, from trigger to serving.
    pub last_duration: Option<Duration>,
}

/// Owns the live snapshot and the swap history.
pub struct Control {
    /// The snapshot being served.
    pub live: Arc<Live>,
    path: PathBuf,
    history: Mutex<VecDeque<Arc<Snapshot>>>,
    stats: Mutex<SwapStats>,
    /// Serializes reloads: one policy is validated at a time.
    reloading: Mutex<()>,
}

fn record_swap(ok: bool) {
    let m = crate::metrics::metrics();
    m.swaps
        .with_label_values(&[if ok { "success" } else { "failure" }])
        .inc();
    if ok {
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        m.last_swap.set(now.as_secs_f64());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Control {
    /// Serves `first`, read from `path`.
    pub fn new(path: &Path, first: Snapshot) -> Control {
        Control {
            live: Arc::new(Live::new(first)),
            path: path.to_path_buf(),
            history: Mutex::new(VecDeque::new()),
            stats: Mutex::new(SwapStats::default()),
            reloading: Mutex::new(()),
        }
    }

    /// The policy file reloads read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Swap statistics.
    pub fn stats(&self) -> SwapStats {
        lock(&self.stats).clone()
    }

    /// Generations kept for rollback, newest first.
    pub fn history(&self) -> Vec<u64> {
        lock(&self.history).iter().map(|s| s.generation).collect()
    }

    /// Reads the policy file again, validates it completely and publishes it. On any
    /// error the running snapshot keeps serving. Blocking: compiles modules.
    pub fn reload(&self) -> Result<Arc<Snapshot>, PolicyErrors> {
        let _one = lock(&self.reloading);
        let started = Instant::now();
        let result = Policy::load(&self.path).and_then(|p| {
            self.check_fixed(&p)?;
            Snapshot::build(p, self.live.next_generation())
        });
        match result {
            Ok(next) => {
                let next = Arc::new(next);
                let previous = self.live.publish(next.clone());
                self.remember(previous);
                let mut st = lock(&self.stats);
                st.successes += 1;
                st.last_swap = Some(SystemTime::now());
                st.last_duration = Some(started.elapsed());
                record_swap(true);
                tracing::info!(generation = next.generation, hash = %next.hash, took_ms = started.elapsed().as_millis() as u64, "policy swapped");
                Ok(next)
            }
            Err(e) => {
                let mut st = lock(&self.stats);
                st.failures += 1;
                record_swap(false);
                st.last_error = Some(e.to_string());
                tracing::error!(errors = %e, "policy rejected; the running policy keeps serving");
                Err(e)
            }
        }
    }

    /// Goes back to the previous good snapshot at once (no recompilation).
    pub fn rollback(&self) -> Result<Arc<Snapshot>, String> {
        let _one = lock(&self.reloading);
        let previous = lock(&self.history)
            .pop_front()
            .ok_or_else(|| "no earlier snapshot to roll back to".to_string())?;
        self.live.publish(previous.clone());
        let mut st = lock(&self.stats);
        st.successes += 1;
        st.last_swap = Some(SystemTime::now());
        record_swap(true);
        tracing::info!(generation = previous.generation, "rolled back");
        Ok(previous)
    }

    fn remember(&self, previous: Arc<Snapshot>) {
        let mut h = lock(&self.history);
        h.push_front(previous);
        h.truncate(HISTORY);
    }

    /// Listeners and threads are bound at start: a policy that changes them needs a restart.
    fn check_fixed(&self, p: &Policy) -> Result<(), PolicyErrors> {
        let cur = &self.live.load().policy;
        if p.listen != cur.listen
            || p.admin != cur.admin
            || p.threads != cur.threads
            || p.access_log != cur.access_log
            || p.h2c != cur.h2c
            || p.tls.as_ref().map(|t| (&t.listen, t.h2))
                != cur.tls.as_ref().map(|t| (&t.listen, t.h2))
        {
            return Err(PolicyErrors(vec![Diagnostic {
                file: p.path.clone(),
                line: None,
                message:
                    "[server] listen, admin, threads, access_log, h2c and [tls] listen/h2 cannot change without a restart (certificates can)"
                        .into(),
            }]));
        }
        Ok(())
    }

    /// Reloads on SIGHUP, on a thread of its own.
    pub fn reload_on_sighup(self: &Arc<Self>) -> std::io::Result<()> {
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("sluice-sighup".into())
            .spawn(move || {
                for _ in signals.forever() {
                    tracing::info!("SIGHUP: reloading the policy");
                    let _ = me.reload();
                }
            })?;
        Ok(())
    }

    /// Reloads when the policy file or a module it names changes (polled, debounced:
    /// a change must be stable for `settle` before it is read).
    pub fn watch(self: &Arc<Self>, every: Duration, settle: Duration) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("sluice-watch".into())
            .spawn(move || {
                let mut seen = me.fingerprint();
                let mut changed_at: Option<Instant> = None;
                loop {
                    std::thread::sleep(every);
                    let now = me.fingerprint();
                    if now != seen {
                        seen = now;
                        changed_at = Some(Instant::now());
                    } else if changed_at.is_some_and(|t| t.elapsed() >= settle) {
                        changed_at = None;
                        tracing::info!("policy or module changed: reloading");
                        let _ = me.reload();
                        seen = me.fingerprint();
                    }
                }
            })?;
        Ok(())
    }

    /// Modification times and sizes of the policy file and the modules and files it names.
    fn fingerprint(&self) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
        let mut files = vec![self.path.clone()];
        files.extend(self.live.load().policy.filters.iter().flat_map(|f| {
            std::iter::once(f.module.clone()).chain(f.files.iter().map(|x| x.path.clone()))
        }));
        files
            .into_iter()
            .map(|f| {
                let meta = std::fs::metadata(&f)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())));
                (f, meta)
            })
            .collect()
    }
}
