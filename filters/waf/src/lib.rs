//! `waf.wasm`: a SecLang (ModSecurity rule language) engine in a Proxy-Wasm filter that runs
//! the OWASP Core Rule Set unmodified. See README.md for the configuration and coverage.

pub mod body;
pub mod config;
pub mod load;
pub mod memo;
pub mod model;
pub mod ops;
pub mod parse;
pub mod pcre;
pub mod prefilter;
pub mod sha1;
pub mod transform;
pub mod tx;

// The Proxy-Wasm glue is built for wasm (and checked by clippy on the host; tests do not link it).
#[cfg(any(target_arch = "wasm32", clippy))]
mod filter;
