//! One plugin instance: a wasmtime store with the guest's root context, the stream
//! contexts it hosts, deadlines and memory caps. A VM that traps is marked failed;
//! its owner replaces it with a fresh one.

use std::sync::Arc;

use wasmtime::{Store, StoreLimitsBuilder, TypedFunc};

use super::callout::{CallResult, Callouts, HttpCallRequest};
use super::engine::{CompiledModule, Engine, EPOCH_TICK};
use super::state::{HostState, PluginInfo, QueueNotifier};
use super::stream::{BodyKind, StreamState};
use super::HostError;

/// Resource limits of one plugin's VMs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Linear-memory cap, bytes.
    pub memory_bytes: usize,
    /// CPU deadline of one callback.
    pub callback_deadline: std::time::Duration,
    /// CPU deadline of start-up: `_initialize`, `proxy_on_vm_start`, `proxy_on_configure`.
    pub startup_deadline: std::time::Duration,
    /// Most elements of one table. A VM has one instance, one memory and 8 tables at most.
    pub table_elements: usize,
    /// Keep a started VM in reserve on each thread, so that a failure costs the
    /// failing request only.
    pub spare_vm: bool,
    /// Time rebuilding VMs after failures may take within the crash-loop window before
    /// rebuilds pause.
    pub rebuild_budget: std::time::Duration,
    /// Most shared-data bytes (keys and values) the filter may have written.
    pub shared_data_bytes: usize,
}

/// Default of `shared_data_max_bytes`: 16 MiB per filter.
pub const DEFAULT_SHARED_DATA_BYTES: usize = 16 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            callback_deadline: std::time::Duration::from_millis(100),
            startup_deadline: std::time::Duration::from_secs(5),
            table_elements: 100_000,
            spare_vm: true,
            rebuild_budget: std::time::Duration::from_millis(2500),
            shared_data_bytes: DEFAULT_SHARED_DATA_BYTES,
        }
    }
}

/// What a stream callback asks the host to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Go on to the next filter.
    Continue,
    /// Hold the stream (buffer the body) until the filter resumes it.
    Pause,
}

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
}

/// The root context id every VM uses.
const ROOT_CONTEXT_ID: u32 = 1;

impl Vm {
    /// Instantiates `module`, runs `_initialize`, creates the root context and runs
    /// `proxy_on_vm_start` and `proxy_on_configure`; either answering false fails.
    pub fn start(
        engine: &Engine,
        module: &CompiledModule,
        plugin: Arc<PluginInfo>,
        limits: Limits,
        callouts: Option<Arc<dyn Callouts>>,
        queue_notifier: Option<QueueNotifier>,
    ) -> Result<Vm, HostError> {
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .instances(1)
            .tables(8)
            .memories(1)
            .table_elements(limits.table_elements)
            .build();
        let mut state = HostState::new(plugin.clone(), store_limits);
        state.callouts = callouts;
        state.properties = engine.properties.clone();
        state.queue_notifier = queue_notifier;
        state.shared_data_max_bytes = limits.shared_data_bytes;
        let mut store = Store::new(&engine.engine, state);
        store.limiter(|s| &mut s.limits);
        let deadline_ticks =
            (limits.callback_deadline.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64;
        // Instantiation and start-up have their own deadline (a WAF compiling rules).
        let startup = (limits.startup_deadline.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64;
        store.set_epoch_deadline(startup);
        let instance = module
            .pre
            .instantiate(&mut store)
            .map_err(|e| HostError::Instantiate(format!("{e:#}")))?;
        let memory = instance.get_memory(&mut store, "memory");
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<i32, i32>(&mut store, "malloc"))
            .map_err(|e| HostError::NotProxyWasm(format!("allocator: {e:#}")))?;
        store.data_mut().memory = memory;
        store.data_mut().instance = Some(instance);
        store.data_mut().alloc = Some(Arc::new(alloc));
        macro_rules! opt {
            ($name:literal) => {
                instance.get_typed_func(&mut store, $name).ok()
            };
        }
        let f = Exports {
            context_create: instance
                .get_typed_func(&mut store, "proxy_on_context_create")
                .map_err(|e| HostError::NotProxyWasm(format!("proxy_on_context_create: {e:#}")))?,
            vm_start: opt!("proxy_on_vm_start"),
            configure: opt!("proxy_on_configure"),
            request_headers: opt!("proxy_on_request_headers"),
            request_body: opt!("proxy_on_request_body"),
            request_trailers: opt!("proxy_on_request_trailers"),
            response_headers: opt!("proxy_on_response_headers"),
            response_body: opt!("proxy_on_response_body"),
            response_trailers: opt!("proxy_on_response_trailers"),
            log: opt!("proxy_on_log"),
            tick: opt!("proxy_on_tick"),
            queue_ready: opt!("proxy_on_queue_ready"),
            http_call_response: opt!("proxy_on_http_call_response"),
            done: opt!("proxy_on_done"),
            delete: opt!("proxy_on_delete"),
        };
        let init = instance
            .get_typed_func::<(), ()>(&mut store, "_initialize")
            .ok();
        let mut vm = Vm {
            store,
            f,
            next_context_id: ROOT_CONTEXT_ID + 1,
            failed: false,
            deadline_ticks,
        };
        if let Some(init) = init {
            vm.call(startup, |_, s| init.call(s, ()))?;
        }
        vm.store.data_mut().root_context_id = ROOT_CONTEXT_ID;
        vm.store.data_mut().context_id = ROOT_CONTEXT_ID;
        vm.call(startup, |f, s| {
            f.context_create.call(s, (ROOT_CONTEXT_ID as i32, 0))
        })?;
        if vm.f.vm_start.is_some() {
            let n = plugin.vm_config.len() as i32;
            let ok = vm.call(startup, |f, s| match &f.vm_start {
                Some(start) => start.call(s, (ROOT_CONTEXT_ID as i32, n)),
                None => Ok(1),
            })?;
            if ok == 0 {
                return Err(HostError::VmStartFailed);
            }
        }
        if vm.f.configure.is_some() {
            let n = plugin.plugin_config.len() as i32;
            let ok = vm.call(startup, |f, s| match &f.configure {
                Some(configure) => configure.call(s, (ROOT_CONTEXT_ID as i32, n)),
                None => Ok(1),
            })?;
            if ok == 0 {
                return Err(HostError::ConfigureFailed);
            }
        }
        Ok(vm)
    }

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
        f(&self.f, &mut self.store).map_err(|e| {
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
        std::mem::swap(&mut st.stream, stream);
        st.has_stream = true;
        st.context_id = ctx;
        st.stream_context_id = ctx;
        let r = self.call(self.deadline_ticks, f);
        let st = self.store.data_mut();
        std::mem::swap(&mut st.stream, stream);
        st.has_stream = false;
        st.context_id = ROOT_CONTEXT_ID;
        st.stream_context_id = 0;
        r
    }

    /// Creates a stream context (`proxy_on_context_create`) and returns its id.
    pub fn create_stream_context(&mut self, stream: &mut StreamState) -> Result<u32, HostError> {
        let id = self.next_context_id;
        self.next_context_id = self
            .next_context_id
            .checked_add(1)
            .unwrap_or(ROOT_CONTEXT_ID + 1);
        self.on_stream(stream, id, |f, s| {
            f.context_create
                .call(s, (id as i32, ROOT_CONTEXT_ID as i32))
        })?;
        Ok(id)
    }

    fn action(
        &mut self,
        stream: &mut StreamState,
        ctx: u32,
        pick: fn(&Exports) -> Option<&F3>,
        a: usize,
        eos: bool,
    ) -> Result<Action, HostError> {
        if pick(&self.f).is_none() {
            return Ok(Action::Continue);
        }
        let r = self.on_stream(stream, ctx, |f, s| match pick(f) {
            Some(f) => f.call(s, (ctx as i32, a as i32, eos as i32)),
            None => Ok(0),
        })?;
        Ok(if r == 1 {
            Action::Pause
        } else {
            Action::Continue
        })
    }

    /// `proxy_on_request_headers`.
    pub fn on_request_headers(
        &mut self,
        stream: &mut StreamState,
        ctx: u32,
        eos: bool,
    ) -> Result<Action, HostError> {
        let n = stream.request_headers.len();
        self.action(stream, ctx, |f| f.request_headers.as_ref(), n, eos)
    }

    /// `proxy_on_response_headers`.
    pub fn on_response_headers(
        &mut self,
        stream: &mut StreamState,
        ctx: u32,
        eos: bool,
    ) -> Result<Action, HostError> {
        let n = stream.response_headers.len();
        self.action(stream, ctx, |f| f.response_headers.as_ref(), n, eos)
    }

    /// `proxy_on_request_body` / `proxy_on_response_body` over `stream.body`.
    pub fn on_body(
        &mut self,
        stream: &mut StreamState,
        ctx: u32,
        kind: BodyKind,
        eos: bool,
    ) -> Result<Action, HostError> {
        let pick: fn(&Exports) -> Option<&F3> = match kind {
            BodyKind::Request => |f| f.request_body.as_ref(),
            BodyKind::Response => |f| f.response_body.as_ref(),
        };
        stream.body_kind = Some(kind);
        let n = stream.body.len();
        let r = self.action(stream, ctx, pick, n, eos);
        stream.body_kind = None;
        r
    }

    /// `proxy_on_request_trailers` / `proxy_on_response_trailers`.
    pub fn on_trailers(
        &mut self,
        stream: &mut StreamState,
        ctx: u32,
        kind: BodyKind,
    ) -> Result<Action, HostError> {
        let (pick, n): (fn(&Exports) -> Option<&F2>, usize) = match kind {
            BodyKind::Request => (
                |f| f.request_trailers.as_ref(),
                stream.request_trailers.len(),
            ),
            BodyKind::Response => (
                |f| f.response_trailers.as_ref(),
                stream.response_trailers.len(),
            ),
        };
        if pick(&self.f).is_none() {
            return Ok(Action::Continue);
        }
        let r = self.on_stream(stream, ctx, |f, s| match pick(f) {
            Some(f) => f.call(s, (ctx as i32, n as i32)),
            None => Ok(0),
        })?;
        Ok(if r == 1 {
            Action::Pause
        } else {
            Action::Continue
        })
    }

    /// Calls any exported function with `stream` attached as stream context `ctx`
    /// (tests and fuzzing of the hostcall boundary).
    #[doc(hidden)]
    pub fn call_export(
        &mut self,
        stream: &mut StreamState,
        ctx: u32,
        name: &str,
        args: &[wasmtime::Val],
    ) -> Result<(), HostError> {
        let func = self
            .store
            .data()
            .instance
            .and_then(|i| i.get_func(&mut self.store, name))
            .ok_or_else(|| HostError::NotProxyWasm(format!("no export {name}")))?;
        let n = func.ty(&self.store).results().len();
        let mut results = vec![wasmtime::Val::I32(0); n];
        self.on_stream(stream, ctx, |_, s| func.call(s, args, &mut results))
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

    /// `proxy_on_tick` on the root context.
    pub fn on_tick(&mut self) -> Result<(), HostError> {
        if self.f.tick.is_none() {
            return Ok(());
        }
        self.call(self.deadline_ticks, |f, s| match &f.tick {
            Some(tick) => tick.call(s, ROOT_CONTEXT_ID as i32),
            None => Ok(()),
        })
    }

    /// `proxy_on_queue_ready` on the root context.
    pub fn on_queue_ready(&mut self, queue_id: u32) -> Result<(), HostError> {
        if self.f.queue_ready.is_none() {
            return Ok(());
        }
        self.call(self.deadline_ticks, |f, s| match &f.queue_ready {
            Some(ready) => ready.call(s, (ROOT_CONTEXT_ID as i32, queue_id as i32)),
            None => Ok(()),
        })
    }

    /// Delivers a call's outcome with `proxy_on_http_call_response` (with the root
    /// context's id, and the dispatching stream attached when a stream dispatched it). A failed
    /// call is delivered with no headers, no body and no trailers, as Envoy does.
    pub fn on_http_call_response(
        &mut self,
        stream: Option<&mut StreamState>,
        ctx: u32,
        token: u32,
        result: CallResult,
    ) -> Result<(), HostError> {
        if self.f.http_call_response.is_none() {
            return Ok(());
        }
        let (response, status) = match result {
            Ok(r) => (r, (0, Vec::new())),
            Err(e) => (Default::default(), (14, e.into_bytes())),
        };
        let (h, b, t) = (
            response.headers.len(),
            response.body.len(),
            response.trailers.len(),
        );
        let st = self.store.data_mut();
        st.call_response = Some(response);
        st.status = status;
        // The spec and the reference host pass the root context's id (the plugin's
        // context that owns the call); SDKs find the dispatching stream by token. The
        // stream stays attached and effective, so header and continue calls act on it.
        let args = (
            ROOT_CONTEXT_ID as i32,
            token as i32,
            h as i32,
            b as i32,
            t as i32,
        );
        let call = |f: &Exports, s: &mut Store<HostState>| match &f.http_call_response {
            Some(f) => f.call(s, args),
            None => Ok(()),
        };
        let r = match stream {
            Some(stream) => self.on_stream(stream, ctx, call),
            None => self.call(self.deadline_ticks, call),
        };
        self.store.data_mut().call_response = None;
        r
    }

    /// Ends a stream context: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    pub fn finish_stream(&mut self, stream: &mut StreamState, ctx: u32) -> Result<(), HostError> {
        self.log_stream(stream, ctx)?;
        self.delete_stream(stream, ctx)
    }

    /// `proxy_on_done` and `proxy_on_log` of a stream context that ended.
    pub fn log_stream(&mut self, stream: &mut StreamState, ctx: u32) -> Result<(), HostError> {
        if self.f.done.is_some() {
            self.on_stream(stream, ctx, |f, s| match &f.done {
                Some(done) => done.call(s, ctx as i32).map(drop),
                None => Ok(()),
            })?;
        }
        if self.f.log.is_some() {
            self.on_stream(stream, ctx, |f, s| match &f.log {
                Some(log) => log.call(s, ctx as i32),
                None => Ok(()),
            })?;
        }
        Ok(())
    }

    /// `proxy_on_delete`: the stream context is gone.
    pub fn delete_stream(&mut self, stream: &mut StreamState, ctx: u32) -> Result<(), HostError> {
        self.store.data_mut().paused.remove(&ctx);
        if self.f.delete.is_some() {
            self.on_stream(stream, ctx, |f, s| match &f.delete {
                Some(delete) => delete.call(s, ctx as i32),
                None => Ok(()),
            })?;
        }
        Ok(())
    }
}
