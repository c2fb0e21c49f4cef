//! `router.wasm`: routing decisions for Sluice (issue #7).
//!
//! Ordered rules match a request on host, path (exact, prefix, regex), method,
//! headers, cookies and query arguments; the first matching rule (or the
//! `default` action) names the upstream pool, possibly through a weighted,
//! sticky split, and may rewrite the path and host, set the consistent-hash
//! key, and edit request and response headers. The decision reaches the host
//! through the `sluice.upstream.*` properties. See `README.md` for the
//! configuration.
//!
//! The matching logic is plain Rust ([`config`], [`rules`], [`request`],
//! [`hash`]) and is unit-tested natively; the Proxy-Wasm glue (`glue.rs`) is
//! compiled for wasm32 only (and checked by clippy on any target), so native
//! test binaries do not link against the host's `proxy_*` imports.

pub mod config;
pub mod hash;
pub mod request;
pub mod rules;

#[cfg(any(target_arch = "wasm32", clippy))]
mod glue;

#[cfg(test)]
mod tests;
