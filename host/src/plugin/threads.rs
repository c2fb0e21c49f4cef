//! A plugin's VMs on one worker thread: the one serving, the spare, and the requests
//! paused on it; a failed VM replaced off the request path.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Build, Plugin};
use crate::spare::SpareSlot;
use crate::{HostError, Vm};

/// One worker thread's VMs of a plugin: the one serving, and the slot a VM built off
/// the request path arrives in (the warm spare, or the replacement of a failed VM).
#[derive(Default)]
pub(super) struct ThreadVms {
    pub(super) current: RefCell<Option<(Vm, u64)>>,
    pub(super) spare: Arc<SpareSlot>,
    /// The thread's last VM failed and none has replaced it yet.
    pub(super) lost: Cell<bool>,
    /// Requests waiting for a paused stream context of the VM to be resumed.
    pub(super) waiters: RefCell<HashMap<u32, tokio::sync::oneshot::Sender<()>>>,
}

impl Plugin {
    /// Waits until this thread has a VM for the plugin, without holding the thread:
    /// the VM is built on the blocking pool meanwhile. Call it before a request's first
    /// callback; [`Plugin::with_vm`] then finds the VM ready.
    pub async fn ready(self: &Arc<Self>) -> Result<(), HostError> {
        loop {
            let spare = {
                // No reference to the thread's state lives across the await below.
                let tv = self.vms.get_or_default();
                let serving = tv
                    .current
                    .try_borrow()
                    .is_ok_and(|c| c.as_ref().is_some_and(|(vm, _)| !vm.failed()));
                if serving {
                    return Ok(());
                }
                tv.spare.clone()
            };
            let notified = spare.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.with_vm(|_, _| ()) {
                Ok(()) => return Ok(()),
                Err(HostError::VmStarting) => {
                    // Woken when the build ends; the timer only guards against a
                    // request that moved threads while it waited.
                    let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `f` with this thread's VM. A failed VM is dropped and replaced by the spare
    /// when one is ready; otherwise a new VM is built off the thread and this call
    /// answers [`HostError::VmStarting`] (outside a Tokio runtime the VM is started
    /// here). `f` also gets the VM's incarnation: a stream context created in one
    /// incarnation does not exist in the next.
    pub fn with_vm<R>(self: &Arc<Self>, f: impl FnOnce(&mut Vm, u64) -> R) -> Result<R, HostError> {
        let tv = self.vms.get_or_default();
        let (r, started) = {
            let mut slot = tv
                .current
                .try_borrow_mut()
                .map_err(|_| HostError::VmFailed)?;
            let mut started = None;
            if slot.as_ref().is_some_and(|(vm, _)| vm.failed()) {
                tv.lost.set(true);
                if let Some((old, _)) = slot.take() {
                    self.replace_failed(old);
                }
                self.failures.replaced.fetch_add(1, Ordering::Relaxed);
                if self.guard.failed() {
                    self.tripped();
                }
            }
            if slot.is_none() {
                let build = if tv.lost.get() {
                    Build::AfterFailure
                } else {
                    Build::Fresh
                };
                let vm = self.next_vm(tv, build)?;
                tv.lost.set(false);
                let inc = self.incarnations.fetch_add(1, Ordering::Relaxed);
                *slot = Some((vm, inc));
                started = Some(inc);
                if self.limits.spare_vm {
                    // Best effort: a refused or failed spare build is retried later.
                    let _ = self.build_spare(tv, build);
                }
            }
            let (vm, inc) = slot.as_mut().expect("VM present");
            let r = f(vm, *inc);
            let grew = vm.memory_delta();
            if grew != 0 {
                self.vm_memory.fetch_add(grew, Ordering::Relaxed);
            }
            for ctx in vm.take_resumed() {
                if let Some(tx) = tv.waiters.borrow_mut().remove(&ctx) {
                    let _ = tx.send(());
                }
            }
            (r, started)
        };
        if let Some(inc) = started {
            tracing::debug!(plugin = %self.info.name, incarnation = inc, "VM in service");
            self.after_start(inc);
        }
        Ok(r)
    }

    /// Holds stream context `ctx` of VM incarnation `incarnation` paused: the answer
    /// resolves when any callback of this thread's VM resumes it (a tick, a queue, a
    /// call response, after `proxy_set_effective_context`). Dropping the answer does
    /// not unpause: call [`Plugin::unpause`].
    pub fn pause(
        self: &Arc<Self>,
        ctx: u32,
        incarnation: u64,
    ) -> Result<tokio::sync::oneshot::Receiver<()>, HostError> {
        self.with_vm(|vm, inc| {
            if inc != incarnation {
                return Err(HostError::ContextLost);
            }
            vm.set_paused(ctx, true);
            Ok(())
        })??;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.vms
            .get_or_default()
            .waiters
            .borrow_mut()
            .insert(ctx, tx);
        Ok(rx)
    }

    /// Ends a pause of stream context `ctx` (resumed, or given up).
    pub fn unpause(self: &Arc<Self>, ctx: u32) {
        self.vms.get_or_default().waiters.borrow_mut().remove(&ctx);
        let _ = self.with_vm(|vm, _| vm.set_paused(ctx, false));
    }

    /// The VM that takes over this thread: the spare, the canary, or a new one.
    pub(super) fn next_vm(self: &Arc<Self>, tv: &ThreadVms, build: Build) -> Result<Vm, HostError> {
        match tv.spare.take() {
            Some(Ok(vm)) => return Ok(vm),
            Some(Err(e)) => return Err(e),
            None => {}
        }
        let canary = self.canary.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut vm) = canary {
            vm.set_queue_notifier(self.queue_notifier());
            return Ok(vm);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            // No runtime to build on (tools, tests): start it here.
            self.admit(build)?;
            let started = Instant::now();
            let vm = Vm::start(
                &self.engine,
                &self.module,
                self.info.clone(),
                self.limits,
                self.callouts.clone(),
                None,
            );
            self.built(build, started.elapsed(), &vm);
            return vm;
        }
        self.build_spare(tv, build)?;
        Err(HostError::VmStarting)
    }

    /// Starts building a VM for this thread's spare slot on the blocking pool, unless
    /// one is on its way already or the crash-loop guard refuses.
    pub(super) fn build_spare(
        self: &Arc<Self>,
        tv: &ThreadVms,
        build: Build,
    ) -> Result<(), HostError> {
        if tv.spare.building() || tv.spare.has_vm() || self.retired() {
            return Ok(());
        }
        self.admit(build)?;
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        if !tv.spare.claim_build() {
            return Ok(());
        }
        let spare = tv.spare.clone();
        let plugin = Arc::downgrade(self);
        let notifier = self.queue_notifier();
        let (engine, module, info, limits, callouts) = (
            self.engine.clone(),
            self.module.clone(),
            self.info.clone(),
            self.limits,
            self.callouts.clone(),
        );
        handle.spawn_blocking(move || {
            let started = Instant::now();
            let vm = Vm::start(&engine, &module, info, limits, callouts, notifier);
            match plugin.upgrade() {
                Some(p) => {
                    p.built(build, started.elapsed(), &vm);
                    spare.put(vm);
                }
                // The policy was swapped out meanwhile: nobody will take it.
                None => spare.release(),
            }
        });
        Ok(())
    }
}
