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
pub mod engine;
pub mod memory;
pub mod state;
pub mod stream;
pub mod vm;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use thread_local::ThreadLocal;

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

/// A filter of a policy: a compiled module with its configuration, and its VMs, one
/// per thread that used it. Dropping the plugin (with its snapshot) drops its VMs.
pub struct Plugin {
    /// Name, ids and configuration.
    pub info: Arc<PluginInfo>,
    /// The compiled module.
    pub module: Arc<CompiledModule>,
    /// Resource limits.
    pub limits: Limits,
    engine: Engine,
    vms: ThreadLocal<RefCell<Option<(Vm, u64)>>>,
    incarnations: AtomicU64,
    /// VMs replaced after a failure, since the plugin started.
    pub replaced: AtomicU64,
}

impl Plugin {
    /// Starts one VM on the calling thread (the canary that validates the plugin:
    /// instantiation, `proxy_on_vm_start`, `proxy_on_configure`).
    pub fn new(
        engine: &Engine,
        module: Arc<CompiledModule>,
        info: PluginInfo,
        limits: Limits,
    ) -> Result<Plugin, HostError> {
        let plugin = Plugin {
            info: Arc::new(info),
            module,
            limits,
            engine: engine.clone(),
            vms: ThreadLocal::new(),
            incarnations: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
        };
        // Validate now, and keep the VM for this thread.
        plugin.with_vm(|_, _| ())?;
        Ok(plugin)
    }

    /// Runs `f` with this thread's VM (started on first use, replaced when it failed).
    /// `f` also gets the VM's incarnation: a stream context created in one incarnation
    /// does not exist in the next.
    pub fn with_vm<R>(&self, f: impl FnOnce(&mut Vm, u64) -> R) -> Result<R, HostError> {
        let cell = self.vms.get_or(|| RefCell::new(None));
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
        if needs_new {
            *slot = None;
            let vm = Vm::start(&self.engine, &self.module, self.info.clone(), self.limits)?;
            *slot = Some((vm, self.incarnations.fetch_add(1, Ordering::Relaxed)));
        }
        let (vm, inc) = slot.as_mut().expect("VM present");
        Ok(f(vm, *inc))
    }
}
