//! Sluice's Proxy-Wasm host on wasmtime. It knows nothing of Pingora, of policies or of
//! images: an embedder (the `sluice` proxy; next, an offline filter runner and a
//! component-model host) hands it modules, configuration and one [`StreamState`] per
//! request, and gets [`Action`]s back. The compiler keeps it so: this crate depends on
//! wasmtime, tokio and small crates only.
//!
//! # The model
//!
//! 1. [`Engine`]: one per process ([`Engine::global`]): the wasmtime engine, the linker
//!    with the hostcall table ([`abi`]), the epoch ticker behind CPU deadlines, and the
//!    embedder's read-only [`StaticProperties`] ([`Engine::with_properties`]).
//! 2. [`CompiledModule`]: [`Engine::compile`] checks a Proxy-Wasm 0.2.x module, links it
//!    (stubbing imports the host does not provide) and caches it by content hash, in
//!    memory and on disk ([`disk_cache`]).
//! 3. [`Plugin`]: a module with its [`PluginInfo`] (name, ids, configuration, files) and
//!    [`Limits`]. [`Plugin::new`] validates it with a canary VM; then each worker thread
//!    gets its own [`Vm`] ([`Plugin::ready`], [`Plugin::with_vm`]), built off the request
//!    path, with a spare in reserve and a crash-loop guard ([`guard`]). A heavy
//!    `proxy_on_configure` runs once per thread per policy, not per request, as in Envoy.
//! 4. [`StreamState`]: what filters see of one request (headers, body, trailers,
//!    properties, a local reply); the embedder owns it and lends it to each callback.
//! 5. Callbacks: [`Vm::create_stream_context`], then [`Vm::on_request_headers`],
//!    [`Vm::on_body`], [`Vm::on_trailers`], [`Vm::on_response_headers`] answer an
//!    [`Action`] (continue or pause); [`Vm::finish_stream`] ends the context. A failure
//!    is a [`HostError`], and a VM that failed is replaced, never reused.
//!
//! A tool that needs no threads (the offline runner) may skip [`Plugin`] and drive one
//! [`Vm`] ([`Vm::start`]) directly with a [`StreamState`] it builds.
//!
//! # What comes from the embedder
//!
//! - HTTP calls filters dispatch: a [`callout::Callouts`] trait object.
//! - Read-only facts only it knows (`sluice.image.formats`): [`StaticProperties`].
//! - How failures are counted: [`FAILURE_HOOK`] and [`GUARD_HOOK`].
//!
//! # Modules
//!
//! Public, because embedders use them: [`engine`] (compilation counters), [`plugin`],
//! [`vm`] (VM and its limits), [`stream`] (per-request data), [`callout`] (the call
//! trait and its types), [`abi`] (the hostcall table, its documentation, filter
//! metrics, log level), [`disk_cache`] (refusal counter) and [`guard`] (the crash-loop
//! guard a plugin exposes). The Store's data, guest-memory access, matchers and the
//! spare-VM slot are internal.

#![warn(missing_docs)]

pub mod abi;
pub mod callout;
pub mod collections;
pub mod component;
pub mod disk_cache;
pub mod engine;
mod error;
pub mod fleet;
mod generations;
pub mod guard;
pub(crate) mod matchers;
pub(crate) mod memory;
pub mod plugin;
mod spare;
mod state;
mod static_properties;
pub mod stream;
pub mod ticker;
pub mod vm;

pub use callout::{CallResult, HttpCallRequest, HttpCallResponse};
pub use engine::{CompiledModule, Engine};
pub use error::HostError;
pub use generations::vms_by_generation;
pub use plugin::{
    FailureCounts, GuardEvent, Plugin, RootCallback, CRASH_COOLDOWN, CRASH_LIMIT, CRASH_WINDOW,
    FAILURE_HOOK, GUARD_HOOK,
};
pub use state::{PluginFile, PluginInfo, QueueNotifier};
pub use static_properties::StaticProperties;
pub use stream::{BodyKind, HeaderMap, LocalResponse, RequestInfo, StreamState};
pub use vm::{Action, Limits, Vm};
