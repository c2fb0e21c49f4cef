//! The data a wasmtime `Store` carries for one plugin VM: what hostcalls read and write.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::{Memory, ResourceLimiter, StoreLimits, TypedFunc};

use super::callout::{Callouts, HttpCallRequest, HttpCallResponse};
use super::matchers::Handles;
use super::static_properties::StaticProperties;
use super::stream::StreamState;

/// Wakes the VM that owns a shared queue (`proxy_on_queue_ready`), on its own thread.
pub type QueueNotifier = std::sync::Arc<dyn Fn(u32) + Send + Sync>;

/// What a plugin is, fixed by the policy: handed to the VM at start.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// Name of the filter in the policy (`plugin_name`).
    pub name: String,
    /// Root id (`plugin_root_id`), empty by default.
    pub root_id: String,
    /// VM id (`plugin_vm_id`).
    pub vm_id: String,
    /// Bytes given to `proxy_on_vm_start`.
    pub vm_config: Vec<u8>,
    /// Bytes given to `proxy_on_configure`.
    pub plugin_config: Vec<u8>,
    /// Policy generation that defined the plugin.
    pub generation: u64,
    /// Files the policy declared for the plugin (`files`), read at load, in order.
    pub files: Arc<Vec<PluginFile>>,
}

/// A file a policy hands to a plugin (`sluice.file.list`, `sluice.file.read`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFile {
    /// Its name for the plugin: the path as the policy wrote it (a glob's matches keep the
    /// glob's directory part as written), so relative names stay relative to the policy.
    pub name: String,
    /// Where it was read from.
    pub path: std::path::PathBuf,
    /// Its contents.
    pub data: Arc<[u8]>,
}

/// Store data of one VM.
pub struct HostState {
    /// The plugin this VM runs.
    pub plugin: Arc<PluginInfo>,
    /// The instance.
    pub instance: Option<wasmtime::Instance>,
    /// The guest's exported memory.
    pub memory: Option<Memory>,
    /// The guest's allocator (`proxy_on_memory_allocate` or `malloc`). Behind an `Arc`:
    /// a hostcall clones it to call it, and cloning a `TypedFunc` itself clones its
    /// registered type (atomics every thread's VMs share).
    pub alloc: Option<Arc<TypedFunc<i32, i32>>>,
    /// Memory, table and instance caps.
    pub limits: Limiter,
    /// The stream being served by the callback that runs now: the caller's own
    /// `StreamState`, attached for the call ([`HostState::attach`]) rather than moved in
    /// and out (it is most of a kilobyte, and a request makes several callbacks per
    /// filter). Null outside a call; [`HostState::stream`] answers `idle` then.
    stream: *mut StreamState,
    /// What [`HostState::stream`] answers while no stream is attached.
    idle: StreamState,
    /// True while a stream is attached.
    pub has_stream: bool,
    /// Id of the context the running callback belongs to.
    pub context_id: u32,
    /// Id of the stream context the running callback serves (0 outside streams).
    pub stream_context_id: u32,
    /// Id of the plugin's root context.
    pub root_context_id: u32,
    /// Tick period asked for with `proxy_set_tick_period_milliseconds`.
    pub tick_period_ms: u32,
    /// Read-only properties the embedder answers (from the engine).
    pub properties: Arc<StaticProperties>,
    /// Properties set on the root context (outside any stream).
    pub root_properties: HashMap<String, Vec<u8>>,
    /// Set when the guest called `proxy_done`.
    pub done_called: bool,
    /// Status and message of the last callout, for `proxy_get_status`.
    pub status: (u32, Vec<u8>),
    /// The HTTP-call client, when the VM serves traffic.
    pub callouts: Option<Arc<dyn Callouts>>,
    /// Calls dispatched by the running callback, waiting to be sent.
    pub pending_calls: Vec<HttpCallRequest>,
    /// Calls this VM dispatched in all (token source).
    pub calls_made: u32,
    /// The call response being delivered (`proxy_on_http_call_response`).
    pub call_response: Option<HttpCallResponse>,
    /// Tokens (and contexts) of the fleet operations this VM started and not yet
    /// completed: their outcome is delivered with `proxy_on_foreign_function`, not as a
    /// call response. A deleted stream's are forgotten.
    pub fleet_tokens: Vec<(u32, u32)>,
    /// The data of the foreign-function completion being delivered (buffer 8, `CallData`).
    pub call_data: Option<Vec<u8>>,
    /// Set when the guest edits a call response's maps (they are its own copy).
    pub call_response_touched: bool,
    /// How to wake this VM when a queue it registered gets an item.
    pub queue_notifier: Option<QueueNotifier>,
    /// Host-side matchers this VM compiled (`sluice.regex.*`, `sluice.pm.*`).
    pub matchers: Handles,
    /// A failure of the guest's own code met inside a hostcall (its allocator trapped,
    /// hit the deadline or the memory cap): the callback fails with it.
    pub guest_fault: Option<wasmtime::Error>,
    /// Most shared-data bytes this filter may have written (`shared_data_max_bytes`).
    pub shared_data_max_bytes: usize,
    /// Stream contexts paused in a headers phase, waiting for `proxy_continue_stream`:
    /// another callback (a tick, a queue, a call response) may make one effective.
    pub paused: std::collections::HashSet<u32>,
    /// Paused stream contexts resumed from outside their own callbacks, to be woken.
    pub resumed: Vec<u32>,
}

// SAFETY: the only field that is not `Send` is `stream`, a pointer that is non-null only
// while `Vm::on_stream` runs on the thread that owns the store and holds the exclusive
// borrow of the `StreamState` it points to; a store moved between threads (a VM built on
// the blocking pool) never carries a non-null one.
unsafe impl Send for HostState {}

impl HostState {
    /// Attaches `stream` for the callback about to run; [`HostState::detach`] must
    /// follow before `stream`'s borrow ends.
    pub(crate) fn attach(&mut self, stream: &mut StreamState) {
        self.stream = stream;
        self.has_stream = true;
    }

    /// Ends [`HostState::attach`].
    pub(crate) fn detach(&mut self) {
        self.stream = std::ptr::null_mut();
        self.has_stream = false;
    }

    /// The attached stream (an empty one when none is).
    pub fn stream(&self) -> &StreamState {
        if self.stream.is_null() {
            &self.idle
        } else {
            // SAFETY: see `attach`: the pointee is exclusively borrowed for the call,
            // and reached only through this state.
            unsafe { &*self.stream }
        }
    }

    /// The attached stream, mutably (the empty one when none is).
    pub fn stream_mut(&mut self) -> &mut StreamState {
        if self.stream.is_null() {
            &mut self.idle
        } else {
            // SAFETY: as in `stream`.
            unsafe { &mut *self.stream }
        }
    }
}

impl HostState {
    /// A fresh state for a VM of `plugin`.
    pub fn new(plugin: Arc<PluginInfo>, limits: StoreLimits) -> Self {
        let limits = Limiter {
            inner: limits,
            memory_hit: false,
            memory_grew: false,
        };
        HostState {
            plugin,
            instance: None,
            memory: None,
            alloc: None,
            limits,
            stream: std::ptr::null_mut(),
            idle: StreamState::default(),
            has_stream: false,
            context_id: 0,
            stream_context_id: 0,
            root_context_id: 0,
            tick_period_ms: 0,
            properties: Arc::default(),
            root_properties: HashMap::new(),
            done_called: false,
            status: (0, Vec::new()),
            callouts: None,
            pending_calls: Vec::new(),
            fleet_tokens: Vec::new(),
            call_data: None,
            calls_made: 0,
            call_response: None,
            call_response_touched: false,
            queue_notifier: None,
            matchers: Handles::default(),
            guest_fault: None,
            shared_data_max_bytes: usize::MAX,
            paused: Default::default(),
            resumed: Vec::new(),
        }
    }
}

/// wasmtime's `StoreLimits`, remembering when the memory cap refused a growth so that
/// the trap that usually follows is reported as a memory-limit hit.
pub struct Limiter {
    inner: StoreLimits,
    /// Set when a `memory.grow` was refused.
    pub memory_hit: bool,
    /// Set when a memory grew, until [`crate::Vm::memory_delta`] accounts for it.
    pub memory_grew: bool,
}

impl Limiter {
    /// `inner`'s limits, nothing refused or grown yet.
    pub fn new(inner: StoreLimits) -> Limiter {
        Limiter {
            inner,
            memory_hit: false,
            memory_grew: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A refusal, whether answered as `false` or (`trap_on_grow_failure`) as an error.
        let ok = match self.inner.memory_growing(current, desired, maximum) {
            Ok(ok) => ok,
            Err(e) => {
                self.memory_hit = true;
                return Err(e);
            }
        };
        if ok {
            self.memory_grew = true;
        } else {
            self.memory_hit = true;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}
