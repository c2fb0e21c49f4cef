//! Component-model guests (issue #21): WASI 0.3 `wasi:http` middleware and edge functions,
//! a second guest kind beside Proxy-Wasm. Experimental: it rides on wasmtime 48's
//! `component-model-async` and `wasmtime-wasi-http`'s `p3` module, both pinned exactly.
//!
//! # The model
//!
//! 1. [`ComponentEngine`]: one per process ([`ComponentEngine::global`]): a wasmtime engine
//!    with the component model and its async ABI, the pooling allocator (copy-on-write heap
//!    images), epoch interruption with its own ticker, and the linker of what a guest may
//!    import ([`imports`]): `wasi:http` types and client, the `handler` a middleware calls
//!    next, `wasi:cli`, `wasi:clocks`, `wasi:random`. No filesystem, no sockets.
//! 2. [`CompiledComponent`]: [`ComponentEngine::compile`] compiles once per content hash,
//!    cached in memory and on disk ([`cache`]); [`CompiledComponent::prepare`] checks the
//!    component against a [`Role`] (it must export `wasi:http/handler@0.3.0` and import
//!    nothing the role does not provide) and pre-links it (`InstancePre`).
//! 3. [`Guest`]: a prepared component bound to its [`Next`] (the handler after it: the next
//!    middleware, the route's pool or edge function) with its [`GuestLimits`]. Each
//!    [`Guest::handle`] runs on a fresh instance by default; [`Reuse`] lets one instance
//!    serve a bounded number of requests, a bounded number at a time ([`worker`]).
//!
//! A component may also import `sluice:edge/request-info` ([`edge`]: the route, client
//! address, SNI, request id of the request it serves) and, a middleware,
//! `sluice:edge/upstream` (the pool and hash key of the request it passes on: an
//! [`Upstream`] extension the embedder's pool handler honours), and `sluice:edge/fleet`
//! (the fleet store's key-value operations, [`fleet`], run by the embedder's
//! [`crate::fleet::FleetBackend`] with the filter's own keys); one that imports none
//! stays portable.
//!
//! A guest's failures are sorted and counted, and its crash-loop guarded, as a Proxy-Wasm
//! plugin's ([`Failures`]).
//!
//! Knows nothing of Pingora or policies: the embedder builds [`Next`] for the pool.

mod cache;
mod edge;
mod engine;
mod failures;
mod fleet;
mod guest;
pub mod imports;
mod state;
mod worker;

pub use edge::{EdgeInfo, Upstream, MAX_CHOICE_LEN, REQUEST_INFO, UPSTREAM};
pub use engine::{
    CompiledComponent, ComponentEngine, Role, COMPONENTS_COMPILED, COMPONENTS_FROM_DISK,
};
pub use failures::{FailureKind, Failures};
pub use fleet::{Counter, FleetError, FLEET};
pub use guest::{Counters, Guest, GuestError, GuestLimits, Reuse, Ways, INSTANCES_CREATED};
pub use state::Next;

/// The `wasi:http` error code a [`Next`] answers with when it cannot produce a response.
pub use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
/// Bodies as `wasmtime-wasi-http` streams them (a boxed `http_body::Body` of `Bytes`).
pub use wasmtime_wasi_http::WasiBody;
