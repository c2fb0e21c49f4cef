//! Starting a plugin's VMs on every worker thread before its policy serves.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Build, Plugin};
use crate::state::QueueNotifier;
use crate::Vm;

impl Plugin {
    /// Starts this plugin's VMs on every worker thread in `workers` (one each, and its
    /// spare with [`crate::Limits::spare_vm`]) and waits until each thread has them in
    /// service, ticking: a request that comes later pays no start-up. The VMs are
    /// built on threads of this call (in parallel, at most one per core), never on a
    /// worker thread; the canary is one of them. Blocking. A thread that does not
    /// answer within `wait`, or a VM that fails to start, leaves that thread to start
    /// its VM at its first request as before. Answers how many threads got a VM.
    pub fn prepare(self: &Arc<Self>, workers: &[tokio::runtime::Handle], wait: Duration) -> usize {
        if workers.is_empty() {
            return 0;
        }
        let per_worker = if self.limits.spare_vm { 2 } else { 1 };
        let n = workers.len() * per_worker;
        let mut slots: Vec<Option<Vm>> = (0..n).map(|_| None).collect();
        slots[0] = self.canary.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Each VM is built knowing the worker that will wake it for its queues: a
        // queue registered in `proxy_on_configure` keeps the registrant's notifier.
        let jobs = (0..n)
            .filter(|k| slots[*k].is_none())
            .map(|k| (k, self.queue_notifier_on(&workers[k / per_worker])))
            .collect();
        for (k, vm) in self.build_many(jobs) {
            slots[k] = Some(vm);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let mut sent = 0;
        let mut slots = slots.into_iter();
        for handle in workers {
            let vm = slots.next().flatten();
            let spare = if per_worker == 2 {
                slots.next().flatten()
            } else {
                None
            };
            let (vm, spare) = match (vm, spare) {
                (Some(vm), spare) => (vm, spare),
                (None, Some(spare)) => (spare, None),
                (None, None) => continue,
            };
            let (plugin, tx) = (self.clone(), tx.clone());
            handle.spawn(async move {
                plugin.install(vm, spare);
                let _ = tx.send(());
            });
            sent += 1;
        }
        drop(tx);
        let deadline = Instant::now() + wait;
        let mut ready = 0;
        while ready < sent {
            let left = deadline.saturating_duration_since(Instant::now());
            if rx.recv_timeout(left).is_err() {
                tracing::warn!(plugin = %self.info.name, ready, sent, "worker threads did not take their VMs in time");
                break;
            }
            ready += 1;
        }
        ready
    }

    /// Builds one VM per job (its slot and queue notifier) on up to one thread per
    /// core; the ones that fail are logged.
    pub(super) fn build_many(
        self: &Arc<Self>,
        jobs: Vec<(usize, Option<QueueNotifier>)>,
    ) -> Vec<(usize, Vm)> {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let n = jobs.len();
        let jobs = Mutex::new(jobs);
        let out = Mutex::new(Vec::with_capacity(n));
        std::thread::scope(|scope| {
            for _ in 0..n.min(cores) {
                scope.spawn(|| {
                    while let Some((k, notifier)) =
                        jobs.lock().unwrap_or_else(|e| e.into_inner()).pop()
                    {
                        let started = Instant::now();
                        let vm = Vm::start(
                            &self.engine,
                            &self.module,
                            self.info.clone(),
                            self.limits,
                            self.callouts.clone(),
                            notifier,
                        );
                        self.built(Build::Fresh, started.elapsed(), &vm);
                        match vm {
                            Ok(vm) => out.lock().unwrap_or_else(|e| e.into_inner()).push((k, vm)),
                            Err(e) => {
                                tracing::error!(plugin = %self.info.name, error = %e, "a VM failed to start; its thread starts one at its first request")
                            }
                        }
                    }
                });
            }
        });
        out.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    /// On a worker thread: puts `vm` in service (and `spare` in reserve) unless the
    /// thread has its own already, then runs its start-up calls and its tick loop.
    pub(super) fn install(self: &Arc<Self>, mut vm: Vm, spare: Option<Vm>) {
        let tv = self.vms.get_or_default();
        let inc = {
            let Ok(mut slot) = tv.current.try_borrow_mut() else {
                self.forget(vm);
                return;
            };
            if slot.is_some() {
                drop(slot);
                self.forget(vm);
                if let Some(s) = spare {
                    self.forget(s);
                }
                return;
            }
            vm.set_queue_notifier(self.queue_notifier());
            let inc = self.incarnations.fetch_add(1, Ordering::Relaxed);
            *slot = Some((vm, inc));
            inc
        };
        if let Some(mut s) = spare {
            if tv.spare.has_vm() || !tv.spare.claim_build() {
                self.forget(s);
            } else {
                s.set_queue_notifier(self.queue_notifier());
                tv.spare.put(Ok(s));
            }
        }
        tracing::debug!(plugin = %self.info.name, incarnation = inc, "VM in service (prepared)");
        self.after_start(inc);
    }
}
