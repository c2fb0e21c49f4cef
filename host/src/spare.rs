//! Where a VM built off the request path waits for the worker thread that asked for it.
//!
//! A worker thread never starts a VM itself (a WAF compiling its rules takes a core for
//! half a second): it asks for one, a blocking-pool thread builds it and leaves it here,
//! and the worker takes it on its next request. One slot per plugin per worker thread;
//! at most one build in flight per slot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::vm::Vm;
use super::HostError;

/// A started VM (or why it did not start), handed from a builder to a worker thread.
#[derive(Default)]
pub struct SpareSlot {
    built: Mutex<Option<Result<Vm, HostError>>>,
    building: AtomicBool,
    ready: tokio::sync::Notify,
}

impl SpareSlot {
    /// Claims the slot's build: true when no build was in flight and the caller must
    /// start one (and [`SpareSlot::put`] its result).
    pub fn claim_build(&self) -> bool {
        !self.building.swap(true, Ordering::AcqRel)
    }

    /// True while a build is in flight.
    pub fn building(&self) -> bool {
        self.building.load(Ordering::Acquire)
    }

    /// Leaves a build's result and wakes whoever waits for it.
    pub fn put(&self, built: Result<Vm, HostError>) {
        *self.built.lock().unwrap_or_else(|e| e.into_inner()) = Some(built);
        self.building.store(false, Ordering::Release);
        self.ready.notify_waiters();
    }

    /// Gives up a claimed build that could not be started.
    pub fn release(&self) {
        self.building.store(false, Ordering::Release);
        self.ready.notify_waiters();
    }

    /// Takes what the last build left, if anything.
    pub fn take(&self) -> Option<Result<Vm, HostError>> {
        self.built.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// True when a started VM waits here.
    pub fn has_vm(&self) -> bool {
        matches!(
            *self.built.lock().unwrap_or_else(|e| e.into_inner()),
            Some(Ok(_))
        )
    }

    /// Resolves on the next [`SpareSlot::put`] or [`SpareSlot::release`] after it was
    /// enabled.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.ready.notified()
    }
}
