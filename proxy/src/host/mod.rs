//! The Proxy-Wasm host on wasmtime. It knows nothing of Pingora: the proxy hands it a
//! [`StreamState`] per request and gets [`Action`]s back.
//!
//! - [`engine`]: the shared wasmtime engine, linker, epoch ticker, module compilation.
//! - [`disk_cache`]: trust checks of the on-disk module cache (owner, mode).
//! - [`vm`]: one plugin instance with its root and stream contexts.
//! - [`abi`]: the hostcall table, one file per area of the spec.
//! - [`matchers`]: host-side regex and phrase sets offered as foreign functions.
//! - [`memory`]: bounds-checked guest memory access and the pairs codec.
//! - [`stream`]: the per-request data filters see.
//!
//! One VM per plugin per worker thread ([`Plugin::with_vm`]), as Envoy does: a heavy
//! `proxy_on_configure` runs once per thread per policy, not per request.

pub mod abi;
pub mod callout;
pub mod disk_cache;
pub mod engine;
pub mod matchers;
pub mod memory;
pub mod state;
pub mod stream;
pub mod vm;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use thread_local::ThreadLocal;

use callout::Callouts;
use state::QueueNotifier;

pub use callout::{CallResult, HttpCallRequest, HttpCallResponse};
pub use engine::{CompiledModule, Engine};
pub use state::{PluginFile, PluginInfo};
pub use stream::{BodyKind, HeaderMap, LocalResponse, RequestInfo, StreamState};
pub use vm::{Action, Limits, Vm};

/// Why a module, a VM or a callback failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// The engine could not be created.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The module is not valid WebAssembly or could not be compiled.
    #[error("compile error: {0}")]
    Compile(String),
    /// The module is not a Proxy-Wasm 0.2.x module.
    #[error("not a Proxy-Wasm 0.2.0/0.2.1 module: {0}")]
    NotProxyWasm(String),
    /// Instantiation failed (start function trapped, limits...).
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    /// `proxy_on_vm_start` answered false.
    #[error("proxy_on_vm_start returned false")]
    VmStartFailed,
    /// `proxy_on_configure` answered false (the plugin rejected its configuration).
    #[error("proxy_on_configure returned false (the filter rejected its configuration)")]
    ConfigureFailed,
    /// A callback trapped.
    #[error("filter {plugin} trapped: {message}")]
    Trap {
        /// Plugin name.
        plugin: String,
        /// Trap message.
        message: String,
    },
    /// A callback ran past its CPU deadline.
    #[error("filter {plugin} exceeded its CPU deadline")]
    Deadline {
        /// Plugin name.
        plugin: String,
    },
    /// The VM hit its linear-memory cap.
    #[error("filter {plugin} hit its memory limit")]
    MemoryLimit {
        /// Plugin name.
        plugin: String,
    },
    /// The plugin's VMs keep failing: no new VM is started for a while.
    #[error("filter {plugin} is crash-looping; its VMs are not restarted for {cooldown_s} s")]
    CrashLoop {
        /// Plugin name.
        plugin: String,
        /// Seconds before a new VM is tried.
        cooldown_s: u64,
    },
    /// The stream's context lived in a VM that has since been replaced.
    #[error("the filter's VM was replaced during this request")]
    ContextLost,
    /// The VM failed earlier and cannot run callbacks.
    #[error("the VM failed earlier")]
    VmFailed,
}

impl HostError {
    fn from_trap(e: wasmtime::Error, plugin: &str) -> HostError {
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => HostError::Deadline {
                plugin: plugin.to_string(),
            },
            _ => HostError::Trap {
                plugin: plugin.to_string(),
                message: format!("{e:#}"),
            },
        }
    }
}

/// Called on every filter failure with the plugin name and the kind (`trap`,
/// `deadline`, `memory`, `crash_loop`): how the proxy counts them in its metrics.
pub static FAILURE_HOOK: std::sync::OnceLock<fn(&str, &str)> = std::sync::OnceLock::new();

/// A callback run on a plugin's root context.
pub type RootCallback = Box<dyn FnOnce(&mut Vm) -> Result<(), HostError>>;

/// A filter of a policy: a compiled module with its configuration, and its VMs, one
/// per thread that used it. Dropping the plugin (with its snapshot) drops its VMs and
/// ends their tick loops.
pub struct Plugin {
    /// Name, ids and configuration.
    pub info: Arc<PluginInfo>,
    /// The compiled module.
    pub module: Arc<CompiledModule>,
    /// Resource limits.
    pub limits: Limits,
    engine: Engine,
    callouts: Option<Arc<dyn Callouts>>,
    vms: ThreadLocal<RefCell<Option<(Vm, u64)>>>,
    incarnations: AtomicU64,
    vm_alive: AtomicI64,
    vm_memory: AtomicI64,
    /// Failures of this plugin's VMs, by kind.
    pub failures: FailureCounts,
    recent_failures: Mutex<VecDeque<Instant>>,
    cooldown_until: Mutex<Option<Instant>>,
}

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
}

/// More VM failures than this within [`CRASH_WINDOW`] pause restarts for [`CRASH_COOLDOWN`].
pub const CRASH_LIMIT: usize = 50;
/// Window of the crash-loop detector.
pub const CRASH_WINDOW: Duration = Duration::from_secs(10);
/// How long a crash-looping plugin gets no new VM.
pub const CRASH_COOLDOWN: Duration = Duration::from_secs(5);

impl Plugin {
    /// Validates the plugin with a canary VM (instantiation, `proxy_on_vm_start`,
    /// `proxy_on_configure`), then drops it: serving VMs start on each worker thread
    /// at its first request.
    pub fn new(
        engine: &Engine,
        module: Arc<CompiledModule>,
        info: PluginInfo,
        limits: Limits,
        callouts: Option<Arc<dyn Callouts>>,
    ) -> Result<Arc<Plugin>, HostError> {
        let info = Arc::new(info);
        Vm::start(
            engine,
            &module,
            info.clone(),
            limits,
            callouts.clone(),
            None,
        )?;
        Ok(Arc::new(Plugin {
            info,
            module,
            limits,
            engine: engine.clone(),
            callouts,
            vms: ThreadLocal::new(),
            incarnations: AtomicU64::new(0),
            vm_alive: AtomicI64::new(0),
            vm_memory: AtomicI64::new(0),
            failures: FailureCounts::default(),
            recent_failures: Mutex::new(VecDeque::new()),
            cooldown_until: Mutex::new(None),
        }))
    }

    /// Runs `f` with this thread's VM (started on first use, replaced when it failed).
    /// `f` also gets the VM's incarnation: a stream context created in one incarnation
    /// does not exist in the next.
    pub fn with_vm<R>(self: &Arc<Self>, f: impl FnOnce(&mut Vm, u64) -> R) -> Result<R, HostError> {
        let cell = self.vms.get_or(|| RefCell::new(None));
        let (r, started) = {
            let mut slot = cell.try_borrow_mut().map_err(|_| HostError::VmFailed)?;
            let needs_new = match slot.as_ref() {
                None => true,
                Some((vm, _)) if vm.failed() => {
                    self.crash_guard()?;
                    self.failures.replaced.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(plugin = %self.info.name, "replacing failed VM");
                    true
                }
                Some(_) => false,
            };
            let mut started = None;
            if needs_new {
                if let Some((old, _)) = slot.take() {
                    self.vm_alive.fetch_sub(1, Ordering::Relaxed);
                    self.vm_memory
                        .fetch_sub(old.memory_bytes() as i64, Ordering::Relaxed);
                }
                let vm = Vm::start(
                    &self.engine,
                    &self.module,
                    self.info.clone(),
                    self.limits,
                    self.callouts.clone(),
                    self.queue_notifier(),
                )?;
                let inc = self.incarnations.fetch_add(1, Ordering::Relaxed);
                self.vm_alive.fetch_add(1, Ordering::Relaxed);
                self.vm_memory
                    .fetch_add(vm.memory_bytes() as i64, Ordering::Relaxed);
                *slot = Some((vm, inc));
                started = Some(inc);
            }
            let (vm, inc) = slot.as_mut().expect("VM present");
            let before = vm.memory_bytes();
            let r = f(vm, *inc);
            let after = vm.memory_bytes();
            if after != before {
                self.vm_memory
                    .fetch_add(after as i64 - before as i64, Ordering::Relaxed);
            }
            (r, started)
        };
        if let Some(inc) = started {
            self.after_start(inc);
        }
        Ok(r)
    }

    /// VMs of this plugin alive now, on all threads.
    pub fn vm_count(&self) -> i64 {
        self.vm_alive.load(Ordering::Relaxed)
    }

    /// Linear memory of this plugin's VMs, bytes.
    pub fn vm_memory_bytes(&self) -> i64 {
        self.vm_memory.load(Ordering::Relaxed)
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

    /// Refuses a new VM while the plugin crash-loops (spec: "Plugin crashes").
    fn crash_guard(&self) -> Result<(), HostError> {
        let now = Instant::now();
        let mut cooldown = self
            .cooldown_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(until) = *cooldown {
            if now < until {
                return Err(HostError::CrashLoop {
                    plugin: self.info.name.clone(),
                    cooldown_s: CRASH_COOLDOWN.as_secs(),
                });
            }
            *cooldown = None;
        }
        let mut recent = self
            .recent_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            recent.pop_front();
        }
        if recent.len() > CRASH_LIMIT {
            recent.clear();
            *cooldown = Some(now + CRASH_COOLDOWN);
            tracing::error!(plugin = %self.info.name, "filter is crash-looping: no new VM for {} s", CRASH_COOLDOWN.as_secs());
        }
        Ok(())
    }

    /// Wakes this thread's VM when a queue it registered gets an item.
    fn queue_notifier(self: &Arc<Self>) -> Option<QueueNotifier> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let weak = Arc::downgrade(self);
        Some(Arc::new(move |queue_id| {
            let weak = weak.clone();
            handle.spawn(async move {
                if let Some(p) = weak.upgrade() {
                    p.root_callback(Box::new(move |vm| vm.on_queue_ready(queue_id)));
                }
            });
        }))
    }

    /// After a VM starts on a worker thread: send the calls its start-up dispatched
    /// and run its tick loop on this thread.
    fn after_start(self: &Arc<Self>, incarnation: u64) {
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
            let Some(p) = plugin.upgrade() else { return };
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
        let Some(p) = plugin.upgrade() else { return };
        p.root_callback(Box::new(|vm| vm.on_tick()));
    }
}
