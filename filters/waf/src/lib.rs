//! `waf.wasm`: a SecLang (ModSecurity rule language) engine in a Proxy-Wasm filter that runs
//! the OWASP Core Rule Set unmodified. See README.md for the configuration and coverage.

pub mod body;
pub mod config;
pub mod hash;
pub mod heap;
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
pub mod tcache;
pub mod transform;
pub mod tx;
pub mod unicode_map;

/// Heap allocator of the filter: per-size free lists of small blocks ([`heap`]) in front of
/// talc, which is faster than std's dlmalloc on the larger blocks. Sound because a
/// Proxy-Wasm VM runs one thread.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOC: heap::SizeClasses<talc::TalckWasm> =
    heap::SizeClasses::new(unsafe { talc::TalckWasm::new_global() });

// The Proxy-Wasm glue is built for wasm (and checked by clippy on the host; tests do not link it).
#[cfg(any(target_arch = "wasm32", clippy))]
mod filter;
