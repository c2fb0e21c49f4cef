//! `waf.wasm`: a SecLang (ModSecurity rule language) engine in a Proxy-Wasm filter that runs
//! the OWASP Core Rule Set unmodified. See README.md for the configuration and coverage.

pub mod body;
pub mod config;
pub mod hash;
pub mod load;
pub mod mem;
pub mod memo;
pub mod model;
pub mod ops;
pub mod parse;
pub mod pcre;
pub mod persist;
pub mod prefilter;
pub mod request;
pub mod sha1;
pub mod transform;
pub mod tx;
pub mod unicode_map;

/// Heap allocator of the filter: talc, which is faster than std's dlmalloc on the many small
/// allocations a request makes. Sound because a Proxy-Wasm VM runs one thread.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOC: talc::TalckWasm = unsafe { talc::TalckWasm::new_global() };

// The Proxy-Wasm glue is built for wasm (and checked by clippy on the host; tests do not link it).
#[cfg(any(target_arch = "wasm32", clippy))]
mod filter;
