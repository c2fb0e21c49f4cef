//! One plugin instance: a wasmtime store with the guest's root context, the stream
//! contexts it hosts, deadlines and memory caps. A VM that traps is marked failed;
//! its owner replaces it with a fresh one.

//!
//! - `start`: instantiation and start-up; `limits`: the caps a VM runs under.
//! - `stream`: a stream context's callbacks, answering [`Action`]s.
//! - `root`: the root context's callbacks (ticks, queues, call responses).

mod limits;
mod root;
mod start;
mod stream;

use wasmtime::{Store, TypedFunc};

use crate::callout::HttpCallRequest;
use crate::state::{HostState, QueueNotifier};
use crate::stream::StreamState;
use crate::HostError;

pub use limits::{Limits, DEFAULT_SHARED_DATA_BYTES};
pub use stream::Action;

type F2 = TypedFunc<(i32, i32), i32>;
type F3 = TypedFunc<(i32, i32, i32), i32>;
type F5 = TypedFunc<(i32, i32, i32, i32, i32), ()>;

struct Exports {
    context_create: TypedFunc<(i32, i32), ()>,
    vm_start: Option<F2>,
    configure: Option<F2>,
    request_headers: Option<F3>,
    request_body: Option<F3>,
    request_trailers: Option<F2>,
    response_headers: Option<F3>,
    response_body: Option<F3>,
    response_trailers: Option<F2>,
    log: Option<TypedFunc<i32, ()>>,
    tick: Option<TypedFunc<i32, ()>>,
    queue_ready: Option<TypedFunc<(i32, i32), ()>>,
    http_call_response: Option<F5>,
    foreign_function: Option<TypedFunc<(i32, i32, i32), ()>>,
    done: Option<TypedFunc<i32, i32>>,
    delete: Option<TypedFunc<i32, ()>>,
}

/// A running plugin instance.
pub struct Vm {
    store: Store<HostState>,
    f: Exports,
    next_context_id: u32,
    failed: bool,
    deadline_ticks: u64,
    /// Linear memory size last reported by [`Vm::memory_delta`].
    accounted_memory: usize,
}

/// The root context id every VM uses.
const ROOT_CONTEXT_ID: u32 = 1;

impl Vm {
    /// True once a callback trapped or hit a limit; the VM must not be used again.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Bytes of linear memory the guest uses now.
    pub fn memory_bytes(&self) -> usize {
        self.store
            .data()
            .memory
            .map(|m| m.data_size(&self.store))
            .unwrap_or(0)
    }

    /// How much the linear memory grew since the last call (or since the VM started):
    /// a field read unless a `memory.grow` happened, so that the plugin's memory
    /// accounting costs nothing per callback.
    pub fn memory_delta(&mut self) -> i64 {
        let st = self.store.data_mut();
        if !st.limits.memory_grew {
            return 0;
        }
        st.limits.memory_grew = false;
        let now = self.memory_bytes();
        let delta = now as i64 - self.accounted_memory as i64;
        self.accounted_memory = now;
        delta
    }

    /// Runs `f` with the exports and the store (the exports are borrowed, not cloned:
    /// cloning a `TypedFunc` clones its registered type, shared atomics of the engine).
    fn call<R>(
        &mut self,
        ticks: u64,
        f: impl FnOnce(&Exports, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, HostError> {
        if self.failed {
            return Err(HostError::VmFailed);
        }
        self.store.set_epoch_deadline(ticks);
        // Per failure, not sticky: a refused growth or an allocator failure counts for
        // the callback it happened in only.
        let st = self.store.data_mut();
        st.limits.memory_hit = false;
        st.guest_fault = None;
        let running = crate::ticker::enter();
        let r = f(&self.f, &mut self.store);
        drop(running);
        r.map_err(|e| {
            self.failed = true;
            let st = self.store.data_mut();
            // A failure inside the guest's allocator during a copy-out is reported as
            // itself (trap, deadline, memory), not as the hostcall's trap.
            let e = st.guest_fault.take().unwrap_or(e);
            if st.limits.memory_hit {
                HostError::MemoryLimit {
                    plugin: st.plugin.name.clone(),
                }
            } else {
                HostError::from_trap(e, &st.plugin.name)
            }
        })
    }

    /// Runs one callback of stream context `ctx` with `stream` attached to the VM.
    fn on_stream<R>(
        &mut self,
        stream: &mut StreamState,
        ctx: u32,
        f: impl FnOnce(&Exports, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, HostError> {
        let st = self.store.data_mut();
        st.attach(stream);
        st.context_id = ctx;
        st.stream_context_id = ctx;
        // The stream is detached however the call ends, a panic in a hostcall included:
        // no later callback may find a pointer to a stream that is gone.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.call(self.deadline_ticks, f)
        }));
        let st = self.store.data_mut();
        st.detach();
        st.context_id = ROOT_CONTEXT_ID;
        st.stream_context_id = 0;
        r.unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Sets how the VM is woken for its shared queues, once it is on the thread that
    /// serves it (a VM built on a blocking thread gets it there).
    pub(crate) fn set_queue_notifier(&mut self, notifier: Option<QueueNotifier>) {
        self.store.data_mut().queue_notifier = notifier;
    }

    /// Marks stream context `ctx` paused in a headers phase (`true`) or not: while
    /// paused, any callback may make it effective and resume it.
    pub fn set_paused(&mut self, ctx: u32, paused: bool) {
        let st = self.store.data_mut();
        if paused {
            st.paused.insert(ctx);
        } else {
            st.paused.remove(&ctx);
            st.resumed.retain(|c| *c != ctx);
        }
    }

    /// Paused stream contexts resumed by the last callbacks (from outside their own).
    pub fn take_resumed(&mut self) -> Vec<u32> {
        let st = self.store.data_mut();
        if st.resumed.is_empty() {
            return Vec::new();
        }
        let r = std::mem::take(&mut st.resumed);
        for c in &r {
            st.paused.remove(c);
        }
        r
    }

    /// Calls the last callback dispatched, to be sent by the caller.
    pub fn take_pending_calls(&mut self) -> Vec<HttpCallRequest> {
        std::mem::take(&mut self.store.data_mut().pending_calls)
    }

    /// The tick period the root context asked for (0: no ticks).
    pub fn tick_period_ms(&self) -> u32 {
        self.store.data().tick_period_ms
    }
}
