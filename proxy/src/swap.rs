//! The swap: validates a new policy into a snapshot, starts its VMs on every worker
//! thread, publishes it atomically, retires the one it replaces, keeps the last good
//! compiled policies for rollback, and records every attempt. Triggered by the admin
//! API, SIGHUP, or (opt-in) a watch of the policy file and its modules.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::policy::{Diagnostic, Policy, PolicyErrors};
use crate::snapshot::{Compiled, Live, Snapshot};

/// How many earlier policies are kept for rollback (compiled, without VMs).
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
    /// The policy file reloads read (a bundle's swap points it at the new bundle's copy).
    path: Mutex<PathBuf>,
    history: Mutex<VecDeque<Arc<Compiled>>>,
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
            path: Mutex::new(path.to_path_buf()),
            history: Mutex::new(VecDeque::new()),
            stats: Mutex::new(SwapStats::default()),
            reloading: Mutex::new(()),
        }
    }

    /// The policy file reloads read.
    pub fn path(&self) -> PathBuf {
        lock(&self.path).clone()
    }

    /// Swap statistics.
    pub fn stats(&self) -> SwapStats {
        lock(&self.stats).clone()
    }

    /// Generations kept for rollback, newest first.
    pub fn history(&self) -> Vec<u64> {
        lock(&self.history).iter().map(|s| s.generation).collect()
    }

    /// Starts the live snapshot's VMs on every worker thread (once the workers are
    /// known, at start: see [`crate::workers`]). Blocking.
    pub fn warm_live(&self) {
        let _one = lock(&self.reloading);
        self.live.load().prepare(crate::workers::handles());
    }

    /// Starts `next`'s VMs on every worker, publishes it and retires the snapshot it
    /// replaces, which is returned.
    fn switch_to(&self, next: &Arc<Snapshot>) -> Arc<Snapshot> {
        next.prepare(crate::workers::handles());
        let previous = self.live.publish(next.clone());
        free_dropped_vm_ids(next);
        previous.retire();
        previous
    }

    /// Reads the policy file again, validates it completely, starts its VMs on every
    /// worker thread and publishes it. On any error the running snapshot keeps
    /// serving. Blocking: compiles modules and starts VMs.
    pub fn reload(&self) -> Result<Arc<Snapshot>, PolicyErrors> {
        let _one = lock(&self.reloading);
        self.reload_locked(&self.path())
    }

    /// Like [`Control::reload`], from the policy at `path`, which later reloads read once
    /// it serves (a new policy bundle's unpacked copy). On any error the running snapshot
    /// keeps serving and reloads keep reading the old path. Blocking.
    pub fn reload_from(&self, path: &Path) -> Result<Arc<Snapshot>, PolicyErrors> {
        let _one = lock(&self.reloading);
        let next = self.reload_locked(path)?;
        *lock(&self.path) = path.to_path_buf();
        Ok(next)
    }

    fn reload_locked(&self, path: &Path) -> Result<Arc<Snapshot>, PolicyErrors> {
        let started = Instant::now();
        let result = Policy::load(path).and_then(|p| {
            self.check_fixed(&p)?;
            Snapshot::build(p, self.live.next_generation())
        });
        match result {
            Ok(next) => {
                let next = Arc::new(next);
                let previous = self.switch_to(&next);
                self.remember(previous.compiled.clone());
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

    /// Goes back to the previous good policy (no recompilation: its VMs are started
    /// again, on every worker, before it serves). Blocking.
    pub fn rollback(&self) -> Result<Arc<Snapshot>, String> {
        let _one = lock(&self.reloading);
        let compiled = lock(&self.history)
            .pop_front()
            .ok_or_else(|| "no earlier snapshot to roll back to".to_string())?;
        let previous = match compiled.start() {
            Ok(s) => Arc::new(s),
            Err(e) => {
                lock(&self.history).push_front(compiled);
                return Err(format!("the earlier policy did not start again: {e}"));
            }
        };
        self.switch_to(&previous);
        let mut st = lock(&self.stats);
        st.successes += 1;
        st.last_swap = Some(SystemTime::now());
        record_swap(true);
        tracing::info!(generation = previous.generation, "rolled back");
        Ok(previous)
    }

    fn remember(&self, previous: Arc<Compiled>) {
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
            || p.upgrade_sock != cur.upgrade_sock
            || p.tls.as_ref().map(|t| (&t.listen, t.h2))
                != cur.tls.as_ref().map(|t| (&t.listen, t.h2))
        {
            return Err(PolicyErrors(vec![Diagnostic {
                file: p.path.clone(),
                line: None,
                message:
                    "[server] listen, admin, threads, access_log, h2c, upgrade_sock and [tls] listen/h2 cannot change without a restart (certificates can)"
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

    /// Reloads when the policy file or a module it names changes, on a thread of its own.
    /// Polled; a change is read only once every watched file has stayed the same (size,
    /// mtime and content) for the policy's `watch_debounce_ms`, so a file caught half
    /// written (which may well parse: cut at a table boundary, it is a smaller policy)
    /// is never swapped in while its writer pauses for less than that. Writers that
    /// rename a finished file into place are safe at any speed.
    pub fn watch(self: &Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("sluice-watch".into())
            .spawn(move || {
                let mut debounce = Debounce::new(me.fingerprint());
                loop {
                    let settle = me.live.load().policy.watch_debounce;
                    std::thread::sleep(poll_interval(settle));
                    if debounce.observe(me.fingerprint(), Instant::now(), settle) {
                        tracing::info!(
                            stable_ms = settle.as_millis() as u64,
                            "policy or module changed and stayed unchanged: reloading"
                        );
                        let _ = me.reload();
                        // Files the new policy names are watched from now on; a write
                        // during the reload is seen as a change and read once it settles.
                        debounce.rebase(me.fingerprint(), Instant::now());
                    }
                }
            })?;
        Ok(())
    }

    /// The state of the policy file (with a hash of its content) and of the modules and
    /// files it names (metadata only: they can be large and are read on every poll).
    fn fingerprint(&self) -> Fingerprint {
        let mut files = vec![(self.path(), true)];
        let live = self.live.load();
        files.extend(live.policy.filters.iter().flat_map(|f| {
            std::iter::once(f.module.clone())
                .chain(f.files.iter().map(|x| x.path.clone()))
                .map(|p| (p, false))
        }));
        files.extend(
            live.policy
                .components
                .iter()
                .map(|c| (c.module.clone(), false)),
        );
        files
            .into_iter()
            .map(|(f, hash)| {
                let state = file_state(&f, hash);
                (f, state)
            })
            .collect()
    }
}

/// What the watcher compares: each watched file with its state.
type Fingerprint = Vec<(PathBuf, Option<FileState>)>;

/// One watched file as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileState {
    modified: SystemTime,
    /// Inode change time (seconds, nanoseconds): moves on every write and rename.
    changed: (i64, i64),
    inode: u64,
    len: u64,
    /// Hash of the content (policy file only): a rewrite within the file system's
    /// timestamp resolution that keeps the size is still a change.
    content: Option<u64>,
}

fn file_state(path: &Path, hash_content: bool) -> Option<FileState> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let content = if hash_content {
        let bytes = std::fs::read(path).ok()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        Some(h.finish())
    } else {
        None
    };
    Some(FileState {
        modified: meta.modified().ok()?,
        changed: (meta.ctime(), meta.ctime_nsec()),
        inode: meta.ino(),
        len: meta.len(),
        content,
    })
}

/// How often the watcher looks: a quarter of the debounce interval, 10 to 250 ms.
fn poll_interval(settle: Duration) -> Duration {
    (settle / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

/// The watcher's state machine: a change is due once nothing changed for `settle`.
#[derive(Debug)]
struct Debounce {
    seen: Fingerprint,
    /// When the files last differed from what was seen before, while a reload is owed.
    changed_at: Option<Instant>,
}

impl Debounce {
    fn new(seen: Fingerprint) -> Debounce {
        Debounce {
            seen,
            changed_at: None,
        }
    }

    /// Takes a new look at the files; true when a reload is due now.
    fn observe(&mut self, now_seen: Fingerprint, now: Instant, settle: Duration) -> bool {
        if now_seen != self.seen {
            self.seen = now_seen;
            self.changed_at = Some(now);
            return false;
        }
        match self.changed_at {
            Some(t) if now.duration_since(t) >= settle => {
                self.changed_at = None;
                true
            }
            _ => false,
        }
    }

    /// After a reload: the files as they are now are the new baseline (the new policy
    /// may name other modules); if the policy file itself changed during the reload,
    /// that change is owed a reload once it settles.
    fn rebase(&mut self, now_seen: Fingerprint, now: Instant) {
        if now_seen.first() != self.seen.first() {
            self.changed_at = Some(now);
        }
        self.seen = now_seen;
    }
}

/// Frees the shared data and queues of the `vm_id`s the published snapshot no longer has
/// (the keys of `vm_id`s still present survive the swap).
fn free_dropped_vm_ids(live: &Snapshot) {
    let keep: std::collections::HashSet<String> = live
        .filters
        .iter()
        .map(|f| f.plugin.info.vm_id.clone())
        .collect();
    crate::host::abi::retain_vm_ids(&keep);
}

#[cfg(test)]
mod tests;
