//! Why a module, a VM or a callback failed.

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
    /// This thread's VM is being started off the request path (see [`crate::Plugin::ready`]).
    #[error("the filter's VM is starting")]
    VmStarting,
}

impl HostError {
    /// The failure of a callback that trapped: a deadline when the epoch interrupted it.
    pub(crate) fn from_trap(e: wasmtime::Error, plugin: &str) -> HostError {
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
