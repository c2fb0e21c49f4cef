//! Filters written as WebAssembly text in a test: Sluice loads `.wat` modules as it loads
//! `.wasm` ones (wasmtime compiles both), so a test can make raw ABI calls the SDKs would
//! not (what the Go SDK does, hostile pointers, allocator traps).

use std::path::Path;

/// Writes `text` as `dir/name.wat` and returns its path as a TOML string for
/// `module = ...`.
pub fn wat_in(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(format!("{name}.wat"));
    std::fs::write(&p, text).unwrap();
    format!("{:?}", p.display().to_string())
}

/// [`wat_in`] a new temporary directory, returned to be kept alive by the caller.
pub fn wat_module(name: &str, text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let toml = wat_in(dir.path(), name, text);
    (dir, toml)
}
