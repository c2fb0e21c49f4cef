//! Components compiled once and kept on disk beside the Proxy-Wasm modules (same
//! directory, same trust checks: [`crate::disk_cache`]); the file name carries the
//! content hash and the engine's compatibility hash, with a `.cwasm-component` suffix.

use std::hash::{Hash, Hasher};

use wasmtime::component::Component;

use super::engine::{count_compiled, count_from_disk};
use crate::{disk_cache, HostError};

/// The compiled component for `bytes` (content hash `hash`): from the cache directory when
/// a trusted entry exists, else compiled (and written there).
pub(super) fn load_or_compile(
    engine: &wasmtime::Engine,
    bytes: &[u8],
    hash: &str,
) -> Result<Component, HostError> {
    let compile = || {
        count_compiled();
        Component::new(engine, bytes).map_err(|e| HostError::Compile(format!("{e:#}")))
    };
    let Some(dir) = crate::Engine::cache_dir() else {
        return compile();
    };
    if let Err(why) = disk_cache::open_dir(&dir) {
        disk_cache::refused(&dir, &why);
        return compile();
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let file = dir.join(format!("{hash}-{:016x}.cwasm-component", h.finish()));
    if std::fs::symlink_metadata(&file).is_ok() {
        if let Err(why) = disk_cache::check_file(&file) {
            disk_cache::refused(&file, &why);
            return compile();
        }
        // SAFETY: the file was written by `Component::serialize` of this same engine
        // configuration (its name carries the compatibility hash) into a directory only
        // Sluice's user can write (checked above, with the file's owner and mode);
        // wasmtime also checks its header before loading it.
        match unsafe { Component::deserialize_file(engine, &file) } {
            Ok(c) => {
                count_from_disk();
                return Ok(c);
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "ignoring a bad component cache entry")
            }
        }
    }
    let component = compile()?;
    if let Ok(bytes) = component.serialize() {
        if let Err(e) = disk_cache::write(&file, &bytes) {
            tracing::debug!(dir = %dir.display(), error = %e, "component cache not written");
        }
    }
    Ok(component)
}
