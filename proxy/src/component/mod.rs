//! Component-model filters on the request path (issue #21): a route's component
//! middleware and edge function, built into one [`Next`] per route ([`RouteComponents`]),
//! run from `request_filter` after the Proxy-Wasm request phases ([`serve`]).
//!
//! ```text
//! client -> Proxy-Wasm request phases -> component 1 -> ... -> component N -> pool | function
//! client <- Proxy-Wasm response phases <- component 1 <- ... <- component N <-
//!           (then proxy_on_log, the access log)
//! ```
//!
//! The host side (engine, instances, limits) is `sluice_host::component`; this module
//! knows the policy, the pools and Pingora's session.

mod chain;
mod dial;
mod pool;
mod session;

pub use chain::{build, client, ways, RouteComponents};
pub use pool::Ways;
pub use session::serve;
