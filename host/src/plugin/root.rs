//! The root context's life on a worker thread: callbacks, the HTTP calls they
//! dispatch, queue wake-ups and the tick loop.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Plugin;
use crate::state::QueueNotifier;
use crate::{HostError, Vm};

/// A callback run on a plugin's root context.
pub type RootCallback = Box<dyn FnOnce(&mut Vm) -> Result<(), HostError>>;

impl Plugin {
    /// Wakes this thread's VM when a queue it registered gets an item.
    pub(super) fn queue_notifier(self: &Arc<Self>) -> Option<QueueNotifier> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        self.queue_notifier_on(&handle)
    }

    /// Wakes the VM of the worker thread that runs `handle` for its queues.
    pub(super) fn queue_notifier_on(
        self: &Arc<Self>,
        handle: &tokio::runtime::Handle,
    ) -> Option<QueueNotifier> {
        let handle = handle.clone();
        let weak = Arc::downgrade(self);
        Some(Arc::new(move |queue_id| {
            let weak = weak.clone();
            handle.spawn(async move {
                if let Some(p) = weak.upgrade().filter(|p| !p.retired()) {
                    p.root_callback(Box::new(move |vm| vm.on_queue_ready(queue_id)));
                }
            });
        }))
    }

    /// After a VM starts on a worker thread: send the calls its start-up dispatched
    /// and run its tick loop on this thread.
    pub(super) fn after_start(self: &Arc<Self>, incarnation: u64) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.root_callback(Box::new(|_| Ok(())));
        tokio::spawn(tick_loop(Arc::downgrade(self), incarnation));
    }

    /// Runs a root-context callback on this thread's VM, then sends the HTTP calls it
    /// dispatched; their responses come back to the root context the same way.
    pub fn root_callback(self: &Arc<Self>, f: RootCallback) {
        let r = self.with_vm(|vm, _| {
            let r = f(vm);
            (r, vm.take_pending_calls())
        });
        let calls = match r {
            Ok((Ok(()), calls)) => calls,
            // No VM on this thread yet: the callback is moot (a new VM runs its own start).
            Err(HostError::VmStarting) => return,
            Ok((Err(e), _)) | Err(e) => {
                self.record_failure(&e);
                tracing::error!(plugin = %self.info.name, error = %e, "root context callback failed");
                return;
            }
        };
        let Some(callouts) = self.callouts.clone() else {
            return;
        };
        for call in calls {
            let weak = Arc::downgrade(self);
            let (ctx, token) = (call.context_id, call.token);
            let fut = callouts.call(call);
            tokio::spawn(async move {
                let result = fut.await;
                if let Some(p) = weak.upgrade() {
                    p.root_callback(Box::new(move |vm| {
                        vm.on_http_call_response(None, ctx, token, result)
                    }));
                }
            });
        }
    }
}

/// Fires `proxy_on_tick` at the period the root context asks for, on the thread of
/// the VM, until the VM is replaced or the plugin is dropped.
async fn tick_loop(plugin: Weak<Plugin>, incarnation: u64) {
    loop {
        let period = {
            let Some(p) = plugin.upgrade().filter(|p| !p.retired()) else {
                return;
            };
            match p.with_vm(|vm, inc| (inc, vm.tick_period_ms())) {
                Ok((inc, period)) if inc == incarnation => period,
                _ => return,
            }
        };
        if period == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(period as u64)).await;
        let Some(p) = plugin.upgrade().filter(|p| !p.retired()) else {
            return;
        };
        p.root_callback(Box::new(|vm| vm.on_tick()));
    }
}
