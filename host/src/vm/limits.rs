//! The resource limits of a plugin's VMs.

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
