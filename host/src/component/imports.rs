//! What a component guest may import: the linker of [`super::ComponentEngine`], and the
//! list that [`super::CompiledComponent::prepare`] checks a component's imports against.
//!
//! Provided: `wasi:http/types`, `wasi:http/client` (sent to the host's pools, never to the
//! network), `wasi:http/handler` (middleware only: the next handler of the chain),
//! `wasi:cli` (stdio goes nowhere, no environment, no arguments), `wasi:clocks` and
//! `wasi:random`, and Sluice's own `sluice:edge/request-info`, `sluice:edge/fleet`
//! ([`super::fleet`]) and (middleware only) `sluice:edge/upstream` ([`super::edge`]). Not
//! provided: `wasi:filesystem` and `wasi:sockets`.

use wasmtime::component::{Accessor, Linker, Resource};
use wasmtime::AsContextMut;
use wasmtime_wasi_http::p3::bindings::http::client::HostWithStore;
use wasmtime_wasi_http::p3::bindings::http::types::{ErrorCode, Request, Response};
use wasmtime_wasi_http::WasiHttp;

use super::state::GuestState;
use super::Role;

/// The interface a middleware imports to call the next handler of its chain.
pub const HANDLER: &str = "wasi:http/handler@0.3.0";

/// The interface every guest must export.
pub const EXPORT: &str = "wasi:http/handler@0.3.0";

/// Interfaces (name without version) the host provides to every role.
const COMMON: &[&str] = &[
    "wasi:http/types",
    "wasi:http/client",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/types",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/types",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/system-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// Whether the host provides the import `name` (`pkg:ns/interface@version`) to `role`.
pub fn provided(name: &str, role: Role) -> bool {
    let Some((bare, version)) = name.split_once('@') else {
        return false;
    };
    if name == super::edge::REQUEST_INFO || name == super::fleet::FLEET {
        return true;
    }
    if name == super::edge::UPSTREAM {
        return role == Role::Middleware;
    }
    if version != "0.3.0" {
        return false;
    }
    COMMON.contains(&bare) || (role == Role::Middleware && name == HANDLER)
}

/// Builds the linker: WASI 0.3 cli, clocks and random, `wasi:http` types and client, and
/// `wasi:http/handler` (the next handler).
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p3::cli::add_to_linker(&mut linker)?;
    wasmtime_wasi::p3::clocks::add_to_linker(&mut linker)?;
    wasmtime_wasi::p3::random::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    super::edge::add_to_linker(&mut linker)?;
    super::fleet::add_to_linker(&mut linker)?;
    let mut handler = linker.instance(HANDLER)?;
    handler.func_wrap_concurrent(
        "handle",
        |accessor: &Accessor<GuestState>, (request,): (Resource<Request>,)| {
            // The request's `sluice:edge` facts and upstream choice go on with it: looked
            // up by the calling task now (in the guest's call), handed over as `send`
            // converts it.
            let data = accessor.with(|mut access| {
                let mut store = access.as_context_mut();
                super::edge::passing(&mut store)
            });
            Box::pin(async move {
                accessor.with(|mut access| access.get().next.passing = data);
                let next = accessor.with_getter::<WasiHttp>(GuestState::next_view);
                let sent: Result<Resource<Response>, ErrorCode> =
                    match <WasiHttp as HostWithStore<GuestState>>::send(&next, request).await {
                        Ok(response) => Ok(response),
                        Err(e) => Err(e.downcast()?),
                    };
                Ok((sent,))
            })
        },
    )?;
    Ok(linker)
}
