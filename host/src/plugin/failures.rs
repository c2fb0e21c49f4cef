//! A plugin's failures: their counts, the hooks that tell the embedder, and the
//! crash-loop guard's say on rebuilding VMs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Build, Plugin};
use crate::{HostError, Vm};

/// Called on every filter failure with the plugin name and the kind (`trap`,
/// `deadline`, `memory`, `crash_loop`): how the proxy counts them in its metrics.
pub static FAILURE_HOOK: std::sync::OnceLock<fn(&str, &str)> = std::sync::OnceLock::new();

/// What the crash-loop guard of a plugin saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GuardEvent {
    /// A VM was rebuilt after a failure, taking this long (on a blocking thread).
    Rebuilt(Duration),
    /// The guard tripped: no VM is rebuilt during its cooldown.
    Tripped,
}

/// Called with the plugin name on every [`GuardEvent`]: how the proxy counts them.
pub static GUARD_HOOK: std::sync::OnceLock<fn(&str, GuardEvent)> = std::sync::OnceLock::new();

/// Failures of one plugin's VMs, by kind, since the plugin started.
#[derive(Debug, Default)]
pub struct FailureCounts {
    /// Traps (panics, `unreachable`, out-of-bounds, hostcall misuse).
    pub traps: AtomicU64,
    /// Callbacks stopped at their CPU deadline.
    pub deadlines: AtomicU64,
    /// Memory-cap hits.
    pub memory: AtomicU64,
    /// VMs replaced after a failure.
    pub replaced: AtomicU64,
    /// Requests refused a VM while the plugin was crash-looping.
    pub crash_loop: AtomicU64,
    /// Times the crash-loop guard tripped.
    pub guard_trips: AtomicU64,
    /// VMs rebuilt after a failure.
    pub rebuilds: AtomicU64,
    /// Microseconds spent rebuilding VMs after failures (on blocking threads).
    pub rebuild_us: AtomicU64,
}

/// More VM failures than this within [`CRASH_WINDOW`] pause rebuilds for [`CRASH_COOLDOWN`].
pub const CRASH_LIMIT: usize = 50;
/// Window of the crash-loop detector.
pub const CRASH_WINDOW: Duration = Duration::from_secs(10);
/// How long a crash-looping plugin gets no new VM.
pub const CRASH_COOLDOWN: Duration = Duration::from_secs(5);

impl Plugin {
    /// May a VM be built now? Rebuilds after failures ask the crash-loop guard.
    pub(super) fn admit(&self, build: Build) -> Result<(), HostError> {
        if build == Build::Fresh {
            return Ok(());
        }
        self.guard.check().map_err(|t| HostError::CrashLoop {
            plugin: self.info.name.clone(),
            cooldown_s: t.remaining.as_secs().max(1),
        })
    }

    /// Accounts for a VM that was built (or failed to start).
    pub(super) fn built(&self, build: Build, took: Duration, vm: &Result<Vm, HostError>) {
        if let Ok(vm) = vm {
            self.count_vms(1);
            self.vm_memory
                .fetch_add(vm.memory_bytes() as i64, Ordering::Relaxed);
        }
        if build == Build::AfterFailure {
            if let Some(hook) = GUARD_HOOK.get() {
                hook(&self.info.name, GuardEvent::Rebuilt(took));
            }
            self.failures.rebuilds.fetch_add(1, Ordering::Relaxed);
            self.failures
                .rebuild_us
                .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
            if self.guard.rebuilt(took) {
                self.tripped();
            }
        }
    }

    pub(super) fn tripped(&self) {
        self.failures.guard_trips.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = GUARD_HOOK.get() {
            hook(&self.info.name, GuardEvent::Tripped);
        }
        tracing::error!(
            plugin = %self.info.name,
            "filter is crash-looping: no VM is rebuilt for {} s",
            self.guard.limits().cooldown.as_secs()
        );
    }

    pub(super) fn replace_failed(&self, vm: Vm) {
        self.count_vms(-1);
        self.vm_memory
            .fetch_sub(vm.memory_bytes() as i64, Ordering::Relaxed);
        tracing::warn!(plugin = %self.info.name, "replacing failed VM");
    }

    /// Counts a failure of one of this plugin's VMs (and tells the failure hook).
    pub fn record_failure(&self, e: &HostError) {
        let (c, kind) = match e {
            HostError::Deadline { .. } => (&self.failures.deadlines, "deadline"),
            HostError::MemoryLimit { .. } => (&self.failures.memory, "memory"),
            HostError::CrashLoop { .. } => (&self.failures.crash_loop, "crash_loop"),
            _ => (&self.failures.traps, "trap"),
        };
        c.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = FAILURE_HOOK.get() {
            hook(&self.info.name, kind);
        }
    }
}
