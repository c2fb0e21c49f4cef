//! Sluice: a Pingora reverse proxy that runs Proxy-Wasm filter chains.
//!
//! A request's path through the code, top to bottom:
//! - [`policy`]: TOML policy -> validated [`policy::Policy`] (errors with file:line),
//!   one submodule per section (server, limits, tls, pools, filters, routes, images).
//! - [`snapshot`]: policy -> compiled, immutable [`snapshot::Snapshot`], published by
//!   [`snapshot::Live`] with `arc-swap`.
//! - [`swap`]: reload, rollback, SIGHUP and file watch; validate first, then publish.
//! - [`header_guard`]: header section size, count and bytes, checked before any filter.
//! - [`listener`]: connections before Pingora's HTTP server: limits, timeouts, h2c.
//! - [`ingress`]: the request made canonical before routing: [`paths`] (path
//!   normalisation, route prefixes, hosts) and [`hop`] (hop-by-hop headers).
//! - [`forwarded`]: `x-request-id` and `x-forwarded-*`, set before routing.
//! - [`downstream`]: the client side of a request as the hooks see it, and Sluice's own
//!   HTTP/1 server session.
//! - [`forward`]: Sluice's own HTTP/1 request loop on pingora-core, driving the hooks.
//! - [`proxy`]: Pingora's `ProxyHttp`; each hook runs one phase of the chain.
//! - [`held_body`]: request bodies held until the filters have seen them.
//! - [`chain`]: runs a phase over a route's filters (pauses and calls, the local
//!   reply's way back, the late end of a request).
//! - [`phase`]: the phases ([`phase::Phase`]) and what callbacks amount to
//!   ([`phase::Verdict`]), with their metric labels.
//! - [`host`]: the Proxy-Wasm host on wasmtime, its own crate (`sluice-host`, knows no Pingora).
//! - [`upstream`]: pools: load balancing, health checks, ejection, the peer to connect to.
//! - [`tls`]: TLS termination: certificates by SNI from the live snapshot.
//! - [`callouts`]: HTTP calls filters dispatch, sent with Pingora.
//! - [`image`]: image variants the `image` filter asks for: fetch, transform, cache.
//! - [`memory`]: heap returned to the kernel after connections close.
//! - [`lifecycle`]: start checks, graceful stop, the hand-over of an upgrade.
//! - [`progress`]: what start-up compiles and starts, and how long it took.
//! - [`metrics`]: Prometheus metrics and the handles resolved once per snapshot.
//! - [`admin`]: the admin listener, `/metrics` rendered by [`admin::scrape`].
//! - [`workers`]: the proxy's worker threads, reached to start VMs before a policy serves.
//! - [`serve`]: the Pingora server of a policy, assembled for `sluice run` and `sluice test`.
//! - [`ftw`]: `sluice test`, the go-ftw YAML test runner for WAF rule authors.
//! - [`ctl`]: `sluice ctl`, the admin API's client for operators.

#![warn(missing_docs)]

pub mod admin;
pub mod bundle;
pub mod callouts;
pub mod chain;
pub mod component;
pub mod ctl;
pub mod downstream;
pub mod fleet;
pub mod forward;
pub mod forwarded;
pub mod ftw;
pub mod header_guard;
pub mod held_body;
pub mod hop;
/// The Proxy-Wasm host, its own crate (`host/`, `sluice-host`) so that the compiler keeps
/// it free of Pingora, policy and image code. Re-exported here under its old module path:
/// `crate::host::...` and `sluice::host::...` name the same items as `sluice_host::...`.
pub use sluice_host as host;
pub mod image;
pub mod ingress;
pub mod lifecycle;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod paths;
pub mod phase;
pub mod policy;
pub mod progress;
pub mod proxy;
pub mod serve;
pub mod snapshot;
pub mod swap;
pub mod tls;
pub mod upstream;
pub mod workers;
