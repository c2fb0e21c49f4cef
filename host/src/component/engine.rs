//! The component engine: wasmtime with the component model's async ABI, the pooling
//! allocator, epoch deadlines; compilation cached by content hash (memory and disk).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};
use wasmtime_wasi_http::p3::bindings::ServicePre;

use super::cache;
use super::imports;
use super::state::GuestState;
use crate::HostError;

/// Components compiled since start.
pub static COMPONENTS_COMPILED: AtomicU64 = AtomicU64::new(0);
/// Components loaded from the on-disk cache since start.
pub static COMPONENTS_FROM_DISK: AtomicU64 = AtomicU64::new(0);

/// Linear-memory ceiling of any one component instance (the pool's slot size); a
/// guest's own cap ([`super::GuestLimits::memory_bytes`]) is at most this.
pub const MAX_MEMORY_BYTES: usize = 256 << 20;

/// Where a component sits in a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `wasi:http/middleware`: in a route's chain; imports `handler` (the next one).
    Middleware,
    /// `wasi:http/service`: ends a route instead of a pool.
    Function,
}

impl Role {
    /// The world's name, for errors.
    pub fn world(self) -> &'static str {
        match self {
            Role::Middleware => "wasi:http/middleware@0.3.0",
            Role::Function => "wasi:http/service@0.3.0",
        }
    }
}

/// The process-wide component engine and its linker.
#[derive(Clone)]
pub struct ComponentEngine {
    pub(crate) engine: wasmtime::Engine,
    linker: Arc<Linker<GuestState>>,
}

/// A compiled component (shared by every policy that names the same bytes).
pub struct CompiledComponent {
    /// SHA-256 of the component's bytes, hex.
    pub hash: String,
    component: Component,
    engine: ComponentEngine,
}

/// Bytes of a linear memory or table the pooling allocator resets in place (`memset`)
/// when an instance ends, instead of decommitting them (see [`ComponentEngine::global`]).
const KEEP_RESIDENT: usize = 2 << 20;

impl ComponentEngine {
    /// The process's engine, built on first use (with its epoch ticker thread).
    pub fn global() -> Result<ComponentEngine, HostError> {
        static ENGINE: OnceLock<Result<ComponentEngine, String>> = OnceLock::new();
        ENGINE
            .get_or_init(|| ComponentEngine::new().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(HostError::Engine)
    }

    fn new() -> wasmtime::Result<ComponentEngine> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(1000)
            .total_core_instances(4000)
            .total_memories(1000)
            .total_tables(2000)
            .max_memory_size(MAX_MEMORY_BYTES)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(64)
            // A fresh instance per request gives its slot back every request. By default
            // the slot's memory is reset with `madvise`, and the next instance faults
            // every page it touches in again (8 page faults, 3 `madvise` a request).
            // Instead, the pages the guest touched are found with the kernel's
            // PAGEMAP_SCAN (Linux 6.7+, `Auto`: else the first `KEEP_RESIDENT` bytes)
            // and reset with `memset`, up to `KEEP_RESIDENT` a memory or table; the rest
            // is still decommitted. The instance sees the same zeroed, image-initialised
            // memory either way.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .wasm_component_model_async(true)
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .memory_init_cow(true)
            // Small reservations: a thousand slots of 4 GiB each would be 4 TiB of address
            // space; bounds checks are the price of 512 MiB slots.
            .memory_reservation(512 << 20)
            .memory_guard_size(32 << 20)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&config)?;
        let linker = imports::linker(&engine)?;
        crate::ticker::register(&engine).map_err(|e| wasmtime::format_err!("{e}"))?;
        Ok(ComponentEngine {
            engine,
            linker: Arc::new(linker),
        })
    }

    /// Compiles `bytes` as a component, once per content hash: a component already
    /// compiled in this process is shared, and one compiled earlier is read from the
    /// module cache (`SLUICE_CACHE_DIR`, as for Proxy-Wasm modules).
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<CompiledComponent>, HostError> {
        let hash = hex::encode(Sha256::digest(bytes));
        static MEMORY: OnceLock<Mutex<HashMap<String, Weak<CompiledComponent>>>> = OnceLock::new();
        let memory = MEMORY.get_or_init(Default::default);
        if let Some(c) = memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .and_then(Weak::upgrade)
        {
            return Ok(c);
        }
        let component = cache::load_or_compile(&self.engine, bytes, &hash)?;
        let compiled = Arc::new(CompiledComponent {
            hash: hash.clone(),
            component,
            engine: self.clone(),
        });
        let mut map = memory.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(hash, Arc::downgrade(&compiled));
        Ok(compiled)
    }
}

impl CompiledComponent {
    /// Checks the component against `role` and pre-links it. Errors name what is wrong:
    /// a missing `wasi:http/handler@0.3.0` export, or the first import the host does not
    /// provide to that role (a middleware placed where a function belongs imports
    /// `wasi:http/handler`, which a function is not given).
    pub(crate) fn prepare(&self, role: Role) -> Result<ServicePre<GuestState>, HostError> {
        let engine = &self.engine.engine;
        let ty = self.component.component_type();
        let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
        if !exports.iter().any(|n| n == imports::EXPORT) {
            return Err(HostError::Compile(format!(
                "not a {} component: it does not export {} (exports: {})",
                role.world(),
                imports::EXPORT,
                if exports.is_empty() {
                    "none".into()
                } else {
                    exports.join(", ")
                }
            )));
        }
        for (name, item) in ty.imports(engine) {
            let is_instance = matches!(item.ty, ComponentItem::ComponentInstance(_));
            if !is_instance || !imports::provided(name, role) {
                return Err(HostError::Compile(format!(
                    "import {name} is not provided to a {} component{}",
                    role.world(),
                    if role == Role::Function && name == imports::HANDLER {
                        " (this is a middleware: put it in a route's `filters`, not `function`)"
                    } else {
                        ""
                    }
                )));
            }
        }
        let pre = self
            .engine
            .linker
            .instantiate_pre(&self.component)
            .map_err(|e| HostError::Compile(format!("{e:#}")))?;
        ServicePre::new(pre).map_err(|e| HostError::Compile(format!("{e:#}")))
    }
}

impl CompiledComponent {
    /// Checks the component against `role` as [`super::Guest::new`] will (export, imports,
    /// links): what `sluice check` reports as a policy error.
    pub fn check(&self, role: Role) -> Result<(), HostError> {
        self.prepare(role).map(drop)
    }
}

impl CompiledComponent {
    /// Whether the component imports a `sluice:edge` interface that answers about the
    /// request it serves (`request-info`, `upstream`): the policy runs such a component
    /// with `reuse_concurrency = 1`. (`sluice:edge/fleet` keeps no request state: it does
    /// not count.)
    pub fn imports_edge(&self) -> bool {
        self.edge_import().is_some()
    }

    /// The first `sluice:edge` interface the component imports that answers about the
    /// request it serves (for errors).
    pub fn edge_import(&self) -> Option<String> {
        self.component
            .component_type()
            .imports(&self.engine.engine)
            .find(|(name, _)| name.starts_with("sluice:edge/") && *name != super::fleet::FLEET)
            .map(|(name, _)| name.to_string())
    }
}

impl std::fmt::Debug for CompiledComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledComponent")
            .field("hash", &self.hash)
            .finish()
    }
}

/// Counts a compilation (the cache calls it).
pub(super) fn count_compiled() {
    COMPONENTS_COMPILED.fetch_add(1, Ordering::Relaxed);
}

/// Counts a load from disk (the cache calls it).
pub(super) fn count_from_disk() {
    COMPONENTS_FROM_DISK.fetch_add(1, Ordering::Relaxed);
}
