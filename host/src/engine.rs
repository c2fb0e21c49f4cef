//! The wasmtime engine every policy shares: configuration, the linker with the
//! hostcall table, the epoch ticker behind callback deadlines, and module compilation.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, ExternType, InstancePre, Linker, Module, OptLevel, ProfilingStrategy, Val, ValType,
};

use super::abi::{self, Row, Status};
use super::disk_cache;
use super::state::HostState;
use super::static_properties::StaticProperties;
use super::HostError;

/// Modules compiled by cranelift since start (cache misses).
pub static MODULES_COMPILED: AtomicU64 = AtomicU64::new(0);
/// Modules loaded from the on-disk cache since start.
pub static MODULES_FROM_DISK: AtomicU64 = AtomicU64::new(0);

pub use super::ticker::EPOCH_TICK;

/// The Proxy-Wasm ABI version a module declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbiVersion {
    /// `proxy_abi_version_0_2_0`.
    V0_2_0,
    /// `proxy_abi_version_0_2_1`.
    V0_2_1,
}

/// The shared wasmtime engine and linker.
#[derive(Clone)]
pub struct Engine {
    pub(crate) engine: wasmtime::Engine,
    linker: Arc<Linker<HostState>>,
    rows: Arc<Vec<Row>>,
    pub(crate) properties: Arc<StaticProperties>,
}

/// A module compiled once per policy and instantiated into one VM per thread.
pub struct CompiledModule {
    /// SHA-256 of the module bytes, hex.
    pub hash: String,
    /// ABI version the module exports.
    pub abi: AbiVersion,
    /// Imports the host stubs (not provided by Sluice): `module.name`.
    pub stubbed_imports: Vec<String>,
    pub(crate) pre: InstancePre<HostState>,
}

impl Engine {
    /// The process-wide engine (created on first use, with its epoch ticker thread).
    pub fn global() -> Result<Engine, HostError> {
        static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
        ENGINE
            .get_or_init(|| Engine::new().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(HostError::Engine)
    }

    fn new() -> wasmtime::Result<Engine> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.cranelift_opt_level(OptLevel::Speed);
        // Tables filled when a VM is instantiated (once per thread and policy), so that
        // an indirect call in a guest does not test whether its table slot was filled
        // yet (wasmtime's default fills slots lazily, on first use).
        config.table_lazy_init(false);
        // A profiling aid (bench/README.md, "Where a guest's time goes"), never set in
        // production.
        if let Some(strategy) = profiler_named(std::env::var_os("SLUICE_WASM_PROFILER").as_deref())?
        {
            config.profiler(strategy);
        }
        let engine = wasmtime::Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        let rows = abi::register(&mut linker)?;
        super::ticker::register(&engine).map_err(|e| wasmtime::format_err!("{e}"))?;
        Ok(Engine {
            engine,
            linker: Arc::new(linker),
            rows: Arc::new(rows),
            properties: Arc::default(),
        })
    }

    /// This engine (sharing its wasmtime engine, linker and module caches) with the
    /// embedder's read-only properties: every VM started from it answers them.
    pub fn with_properties(&self, properties: StaticProperties) -> Engine {
        Engine {
            properties: Arc::new(properties),
            ..self.clone()
        }
    }

    /// The embedder's read-only properties VMs of this engine answer.
    pub fn properties(&self) -> &StaticProperties {
        &self.properties
    }

    /// The hostcall table this engine links.
    pub fn hostcalls(&self) -> &[Row] {
        &self.rows
    }

    /// Compiles a Proxy-Wasm module, or reuses it: modules are cached in memory by
    /// content hash (a swap that changes only configs or routes compiles nothing) and on
    /// disk by content hash and engine settings (a restart with unchanged modules
    /// compiles nothing). Checks the exports, links every import (stubbing the ones
    /// Sluice does not provide so that they answer an error status, not a trap), and
    /// prepares the module for fast instantiation.
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<CompiledModule>, HostError> {
        let hash = hex::encode(Sha256::digest(bytes));
        static MEMORY: OnceLock<Mutex<HashMap<String, Weak<CompiledModule>>>> = OnceLock::new();
        let memory = MEMORY.get_or_init(Default::default);
        let cached = memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .and_then(Weak::upgrade);
        if let Some(m) = cached {
            return Ok(m);
        }
        let module = self.load_or_compile(bytes, &hash)?;
        let compiled = Arc::new(self.prepare(module, hash.clone())?);
        let mut map = memory.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(hash, Arc::downgrade(&compiled));
        Ok(compiled)
    }

    /// The on-disk cache directory: `SLUICE_CACHE_DIR`, else `$HOME/.cache/sluice`;
    /// `SLUICE_CACHE_DIR=off` disables it. Used only when [`disk_cache`] trusts it.
    pub(crate) fn cache_dir() -> Option<PathBuf> {
        match std::env::var_os("SLUICE_CACHE_DIR") {
            Some(d) if d == "off" => None,
            Some(d) => Some(PathBuf::from(d)),
            None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluice")),
        }
    }

    fn load_or_compile(&self, bytes: &[u8], hash: &str) -> Result<Module, HostError> {
        let compile = || {
            MODULES_COMPILED.fetch_add(1, Ordering::Relaxed);
            Module::new(&self.engine, bytes).map_err(|e| HostError::Compile(format!("{e:#}")))
        };
        let Some(dir) = Self::cache_dir() else {
            return compile();
        };
        if let Err(why) = disk_cache::open_dir(&dir) {
            disk_cache::refused(&dir, &why);
            return compile();
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let file = dir.join(format!("{hash}-{:016x}.cwasm", h.finish()));
        if std::fs::symlink_metadata(&file).is_ok() {
            if let Err(why) = disk_cache::check_file(&file) {
                disk_cache::refused(&file, &why);
                return compile();
            }
            // SAFETY: the file was written by `Module::serialize` of this same engine
            // configuration (its name carries the compatibility hash) into a directory
            // only Sluice's user can write (checked above, with the file's owner and
            // mode); wasmtime also checks its header before loading it.
            match unsafe { Module::deserialize_file(&self.engine, &file) } {
                Ok(m) => {
                    MODULES_FROM_DISK.fetch_add(1, Ordering::Relaxed);
                    return Ok(m);
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "ignoring a bad module cache entry")
                }
            }
        }
        let module = compile()?;
        if let Ok(bytes) = module.serialize() {
            if let Err(e) = disk_cache::write(&file, &bytes) {
                tracing::debug!(dir = %dir.display(), error = %e, "module cache not written");
            }
        }
        Ok(module)
    }

    fn prepare(&self, module: Module, hash: String) -> Result<CompiledModule, HostError> {
        let exports: HashSet<&str> = module.exports().map(|e| e.name()).collect();
        let abi = if exports.contains("proxy_abi_version_0_2_1") {
            AbiVersion::V0_2_1
        } else if exports.contains("proxy_abi_version_0_2_0") {
            AbiVersion::V0_2_0
        } else {
            return Err(HostError::NotProxyWasm(
                "exports neither proxy_abi_version_0_2_1 nor proxy_abi_version_0_2_0".into(),
            ));
        };
        if !exports.contains("memory") {
            return Err(HostError::NotProxyWasm("exports no memory".into()));
        }
        if !exports.contains("proxy_on_memory_allocate") && !exports.contains("malloc") {
            return Err(HostError::NotProxyWasm(
                "exports neither proxy_on_memory_allocate nor malloc".into(),
            ));
        }
        if !exports.contains("proxy_on_context_create") {
            return Err(HostError::NotProxyWasm(
                "exports no proxy_on_context_create".into(),
            ));
        }
        let known: HashSet<(&str, &str)> = self.rows.iter().map(|r| (r.module, r.name)).collect();
        let mut linker: Option<Linker<HostState>> = None;
        let mut stubbed_imports = Vec::new();
        for imp in module.imports() {
            if known.contains(&(imp.module(), imp.name())) {
                continue;
            }
            let ExternType::Func(ty) = imp.ty() else {
                return Err(HostError::NotProxyWasm(format!(
                    "imports {}.{}, which is not a function; Sluice provides only functions",
                    imp.module(),
                    imp.name()
                )));
            };
            // WASI calls answer ENOSYS; anything else answers UNIMPLEMENTED.
            let code = if imp.module() == "wasi_snapshot_preview1" {
                52
            } else {
                Status::Unimplemented as i32
            };
            let result_types: Vec<ValType> = ty.results().collect();
            let l = linker.get_or_insert_with(|| (*self.linker).clone());
            l.func_new(
                imp.module(),
                imp.name(),
                ty.clone(),
                move |_c, _params, results| {
                    for (i, (r, t)) in results.iter_mut().zip(&result_types).enumerate() {
                        *r = match t {
                            ValType::I32 if i == 0 => Val::I32(code),
                            ValType::I32 => Val::I32(0),
                            ValType::I64 => Val::I64(0),
                            ValType::F32 => Val::F32(0),
                            ValType::F64 => Val::F64(0),
                            _ => wasmtime::bail!("stubbed import returns an unsupported type"),
                        };
                    }
                    Ok(())
                },
            )
            .map_err(|e| HostError::Compile(format!("{e:#}")))?;
            stubbed_imports.push(format!("{}.{}", imp.module(), imp.name()));
        }
        let linker = linker.as_ref().unwrap_or(&self.linker);
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| HostError::Compile(format!("{e:#}")))?;
        Ok(CompiledModule {
            hash,
            abi,
            stubbed_imports,
            pre,
        })
    }
}

/// The profiler agent a `SLUICE_WASM_PROFILER` value names: `perfmap` (guest functions
/// named in `/tmp/perf-PID.map`, which `perf report` reads); unset or empty: none; any
/// other value is an error (a typo must not silently profile nothing).
fn profiler_named(value: Option<&std::ffi::OsStr>) -> wasmtime::Result<Option<ProfilingStrategy>> {
    let Some(v) = value else { return Ok(None) };
    match v.to_str() {
        Some("") => Ok(None),
        Some("perfmap") => Ok(Some(ProfilingStrategy::PerfMap)),
        _ => Err(wasmtime::format_err!(
            "SLUICE_WASM_PROFILER={v:?}: expected perfmap"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_profiler_knob_names_perfmap_or_nothing() {
        assert!(matches!(profiler_named(None), Ok(None)));
        assert!(matches!(profiler_named(Some(OsStr::new(""))), Ok(None)));
        assert!(matches!(
            profiler_named(Some(OsStr::new("perfmap"))),
            Ok(Some(ProfilingStrategy::PerfMap))
        ));
        for typo in ["perf", "PerfMap", "jitdump", "perfmap "] {
            let e = profiler_named(Some(OsStr::new(typo))).unwrap_err();
            assert!(format!("{e}").contains("expected perfmap"), "{typo}: {e}");
        }
    }
}
