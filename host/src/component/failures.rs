//! A guest's failures, told and guarded as a Proxy-Wasm plugin's are: each instance that
//! ends in a failure is sorted into a kind (`trap`, `deadline`, `memory`: the names of
//! [`crate::FAILURE_HOOK`]) and counted against the guest's crash-loop guard
//! ([`crate::guard::CrashGuard`], with the Proxy-Wasm guard's bounds); while the guard is
//! tripped a request gets no instance ([`Failures::admit`]), and the guard's events go to
//! [`crate::GUARD_HOOK`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::guard::{CrashGuard, GuardLimits, Tripped};
use crate::{GuardEvent, CRASH_COOLDOWN, CRASH_LIMIT, CRASH_WINDOW, FAILURE_HOOK, GUARD_HOOK};

/// Why an instance ended without finishing its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A trap (a panic, `unreachable`, an out-of-bounds access...).
    Trap,
    /// The CPU deadline of one entry into the guest (epoch interruption).
    Deadline,
    /// The memory cap refused a growth.
    Memory,
}

impl FailureKind {
    /// The `kind` label, as Proxy-Wasm failures are counted.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Deadline => "deadline",
            FailureKind::Memory => "memory",
        }
    }

    /// Sorts the error an instance ended with; `memory_hit`: its limiter refused a growth.
    pub fn of(error: &wasmtime::Error, memory_hit: bool) -> FailureKind {
        if memory_hit {
            return FailureKind::Memory;
        }
        let interrupted = error.chain().any(|e| {
            matches!(
                e.downcast_ref::<wasmtime::Trap>(),
                Some(wasmtime::Trap::Interrupt)
            )
        });
        if interrupted {
            FailureKind::Deadline
        } else {
            FailureKind::Trap
        }
    }
}

/// One guest's failure accounting and crash-loop guard.
pub struct Failures {
    name: String,
    guard: CrashGuard,
    /// An instance failed since the last one was created: the next one is a rebuild,
    /// whose time the guard's budget pays.
    rebuild_pending: AtomicBool,
}

impl Failures {
    /// Accounting for the guest named `name` (the filter), whose rebuilds after failures
    /// may take `rebuild_budget` per window.
    pub fn new(name: &str, rebuild_budget: Duration) -> Failures {
        Failures {
            name: name.to_string(),
            guard: CrashGuard::new(GuardLimits {
                window: CRASH_WINDOW,
                max_failures: CRASH_LIMIT,
                rebuild_budget,
                cooldown: CRASH_COOLDOWN,
            }),
            rebuild_pending: AtomicBool::new(false),
        }
    }

    /// May a request get an instance now? `Err` while the guard is tripped.
    pub fn admit(&self) -> Result<(), Tripped> {
        self.guard.check()
    }

    /// A request refused by the tripped guard (`crash_loop`, as Proxy-Wasm counts it).
    pub fn refused(&self) {
        tell(&self.name, "crash_loop");
    }

    /// An instance ended in a failure of `kind`.
    pub fn failed(&self, kind: FailureKind, error: &wasmtime::Error) {
        tracing::warn!(plugin = %self.name, kind = kind.as_str(), error = %format!("{error:#}"), "component instance failed");
        tell(&self.name, kind.as_str());
        self.rebuild_pending.store(true, Ordering::Relaxed);
        if self.guard.failed() {
            self.tripped();
        }
    }

    /// An instance was created in `took`: after a failure, a rebuild the guard pays for.
    pub fn instantiated(&self, took: Duration) {
        if !self.rebuild_pending.swap(false, Ordering::Relaxed) {
            return;
        }
        if let Some(hook) = GUARD_HOOK.get() {
            hook(&self.name, GuardEvent::Rebuilt(took));
        }
        if self.guard.rebuilt(took) {
            self.tripped();
        }
    }

    fn tripped(&self) {
        if let Some(hook) = GUARD_HOOK.get() {
            hook(&self.name, GuardEvent::Tripped);
        }
        tracing::error!(
            plugin = %self.name,
            "filter is crash-looping: no instance is created for {} s",
            self.guard.limits().cooldown.as_secs()
        );
    }
}

fn tell(name: &str, kind: &str) {
    if let Some(hook) = FAILURE_HOOK.get() {
        hook(name, kind);
    }
}
