//! The Proxy-Wasm host on wasmtime. It knows nothing of Pingora: the proxy hands it a
//! [`StreamState`] per request and gets [`Action`]s back.
//!
//! - [`engine`]: the shared wasmtime engine, linker, epoch ticker, module compilation.
//! - [`vm`]: one plugin instance with its root and stream contexts.
//! - [`abi`]: the hostcall table, one file per area of the spec.
//! - [`memory`]: bounds-checked guest memory access and the pairs codec.
//! - [`stream`]: the per-request data filters see.
//!
//! One VM per plugin per worker thread ([`Plugin::with_vm`]), as Envoy does: a heavy
//! `proxy_on_configure` runs once per thread per policy, not per request.

pub mod abi;
pub mod callout;
pub mod engine;
pub mod memory;
pub mod state;
pub mod stream;
pub mod vm;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use thread_local::ThreadLocal;

use callout::Callouts;
use state::QueueNotifier;

pub use callout::{CallResult, HttpCallRequest, HttpCallResponse};
pub use engine::{CompiledModule, Engine};
pub use state::PluginInfo;
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
    /// VMs replaced after a failure, since the plugin started.
    pub replaced: AtomicU64,
}

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
            replaced: AtomicU64::new(0),
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
                    self.replaced.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(plugin = %self.info.name, "replacing failed VM");
                    true
                }
                Some(_) => false,
            };
            let mut started = None;
            if needs_new {
                *slot = None;
                let vm = Vm::start(
                    &self.engine,
                    &self.module,
                    self.info.clone(),
                    self.limits,
                    self.callouts.clone(),
                    self.queue_notifier(),
                )?;
                let inc = self.incarnations.fetch_add(1, Ordering::Relaxed);
                *slot = Some((vm, inc));
                started = Some(inc);
            }
            let (vm, inc) = slot.as_mut().expect("VM present");
            (f(vm, *inc), started)
        };
        if let Some(inc) = started {
            self.after_start(inc);
        }
        Ok(r)
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
