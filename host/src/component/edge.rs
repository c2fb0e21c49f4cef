//! `sluice:edge@0.1.0` (`wit/sluice-edge/edge.wit`): the optional Sluice imports of a
//! component guest: the per-request facts `request-info` returns ([`EdgeInfo`]), and the
//! upstream a middleware chooses with `upstream` for the request it passes on
//! ([`Upstream`]).
//!
//! # Which request is "the current one"
//!
//! A reused instance may run several requests' tasks at a time, and a task may go on
//! (streaming its body) after the next request started. So the facts are kept per
//! component-model task: [`super::worker`] records each request's [`EdgeInfo`] under the
//! task it creates for the guest's `handle` (`WorkerState::on_request_start`), and an
//! import looks up the root of the calling task's async call stack
//! (`StoreContextMut::async_call_stack`). A call is answered with its own request's facts,
//! never another's, whatever the reuse. The policy still asks `reuse_concurrency = 1` of a
//! component that imports this package (checked at load:
//! [`CompiledComponent::imports_edge`]).
//!
//! The facts travel with the request (an `http::Request` extension) from the embedder to
//! the first guest, and from a middleware to the handler after it ([`super::state`]).
//!
//! The upstream choice is kept per task the same way, starting as the one the request
//! came with (its `Arc<Upstream>` extension: what the previous middleware chose; the
//! embedder never sets one), and goes on as an extension with each request the task
//! passes to `handler.handle`, where the embedder's pool handler honours it. A new task
//! starts from its own request's choice, so nothing one request chose survives into
//! another on a reused instance.
//!
//! [`CompiledComponent::imports_edge`]: super::CompiledComponent::imports_edge

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::{GuestTaskId, Linker};
use wasmtime::StoreContextMut;

use super::state::GuestState;

/// The interface's name, as a component imports it.
pub const REQUEST_INFO: &str = "sluice:edge/request-info@0.1.0";

/// The upstream-choice interface's name (middleware only).
pub const UPSTREAM: &str = "sluice:edge/upstream@0.1.0";

/// Longest pool name or hash key a guest may set (bytes); longer traps.
pub const MAX_CHOICE_LEN: usize = 8192;

/// Most requests whose facts one instance keeps. Task slots are reused (an entry is
/// overwritten by the next task in its slot), so only a guest that keeps this many
/// requests open at once reaches it; the facts kept are then dropped, and an older
/// request's calls trap rather than ever see another request's facts.
const MAX_TRACKED: usize = 4096;

/// What `sluice:edge/request-info` returns for one request. Attach it to the request
/// handed to [`super::Guest::handle`] as an extension (`Arc<EdgeInfo>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeInfo {
    /// `route`: the route's name.
    pub route: String,
    /// `client-address`: the client's IP address.
    pub client_address: Option<String>,
    /// `sni`: the TLS server name, none in cleartext.
    pub sni: Option<String>,
    /// `request-id`: the `x-request-id` Sluice set.
    pub request_id: String,
    /// `protocol`: `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub protocol: String,
    /// `generation`: the policy's generation.
    pub generation: u64,
}

/// Where a middleware sends the request it passes on (`sluice:edge/upstream`): read by
/// the embedder's pool handler from the request's `Arc<Upstream>` extension. The default
/// (nothing chosen) is the route's pool with its own hash key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upstream {
    /// Another of the policy's pools, by name, instead of the route's.
    pub pool: Option<String>,
    /// The consistent-hash key instead of the one the pool's `hash_key` gives.
    pub hash_key: Option<String>,
}

/// What a request brings to the guest that serves it: its facts and the upstream chosen
/// so far (both from the request's extensions).
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestData {
    pub(crate) info: Option<Arc<EdgeInfo>>,
    pub(crate) upstream: Upstream,
}

impl RequestData {
    /// The data a request carries as extensions.
    pub(crate) fn of<B>(request: &http::Request<B>) -> RequestData {
        RequestData {
            info: request.extensions().get::<Arc<EdgeInfo>>().cloned(),
            upstream: request
                .extensions()
                .get::<Arc<Upstream>>()
                .map(|u| (**u).clone())
                .unwrap_or_default(),
        }
    }

    /// Puts the data on `request` as extensions, replacing any it had.
    pub(crate) fn attach<B>(self, request: &mut http::Request<B>) {
        let ext = request.extensions_mut();
        match self.info {
            Some(info) => {
                ext.insert(info);
            }
            None => {
                ext.remove::<Arc<EdgeInfo>>();
            }
        }
        ext.insert(Arc::new(self.upstream));
    }
}

/// The data of the requests an instance serves, by the guest task serving each.
#[derive(Default)]
pub(crate) struct Requests {
    by_task: HashMap<GuestTaskId, RequestData>,
}

impl Requests {
    /// Records `data` as the request `task` serves, replacing what a former task of the
    /// same slot left (its facts and its upstream choice).
    pub(crate) fn start(&mut self, task: GuestTaskId, data: RequestData) {
        if self.by_task.len() >= MAX_TRACKED && !self.by_task.contains_key(&task) {
            self.by_task.clear();
        }
        self.by_task.insert(task, data);
    }
}

/// The data of the request the calling task serves (the root of its call stack).
fn entry<'a>(store: &'a mut StoreContextMut<'_, GuestState>) -> Option<&'a mut RequestData> {
    let root = store.async_call_stack().ok()?.last()?;
    store.data_mut().requests.by_task.get_mut(&root)
}

/// What the calling task passes on with a request to its next handler: its request's
/// facts and its upstream choice as it stands (none outside a request).
pub(crate) fn passing(store: &mut StoreContextMut<'_, GuestState>) -> Option<RequestData> {
    entry(store).cloned()
}

/// Adds `sluice:edge/request-info` and `sluice:edge/upstream` to `linker`. A call outside
/// any request's task (none recorded), or a fact asked of a request that came without
/// facts, traps: the host never runs a guest without them.
pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    let mut i = linker.instance(REQUEST_INFO)?;
    i.func_wrap("route", |mut s: StoreContextMut<'_, GuestState>, (): ()| {
        Ok((info(&mut s)?.route.clone(),))
    })?;
    i.func_wrap(
        "client-address",
        |mut s: StoreContextMut<'_, GuestState>, (): ()| {
            Ok((info(&mut s)?.client_address.clone(),))
        },
    )?;
    i.func_wrap("sni", |mut s: StoreContextMut<'_, GuestState>, (): ()| {
        Ok((info(&mut s)?.sni.clone(),))
    })?;
    i.func_wrap(
        "request-id",
        |mut s: StoreContextMut<'_, GuestState>, (): ()| Ok((info(&mut s)?.request_id.clone(),)),
    )?;
    i.func_wrap(
        "protocol",
        |mut s: StoreContextMut<'_, GuestState>, (): ()| Ok((info(&mut s)?.protocol.clone(),)),
    )?;
    i.func_wrap(
        "generation",
        |mut s: StoreContextMut<'_, GuestState>, (): ()| Ok((info(&mut s)?.generation,)),
    )?;
    let mut u = linker.instance(UPSTREAM)?;
    u.func_wrap(
        "set-pool",
        |mut s: StoreContextMut<'_, GuestState>, (name,): (Option<String>,)| {
            upstream(&mut s)?.pool = bounded("pool name", name)?;
            Ok(())
        },
    )?;
    u.func_wrap(
        "set-hash-key",
        |mut s: StoreContextMut<'_, GuestState>, (key,): (Option<String>,)| {
            upstream(&mut s)?.hash_key = bounded("hash key", key)?;
            Ok(())
        },
    )?;
    u.func_wrap(
        "choice",
        |mut s: StoreContextMut<'_, GuestState>, (): ()| {
            let u = upstream(&mut s)?;
            Ok(((u.pool.clone(), u.hash_key.clone()),))
        },
    )?;
    Ok(())
}

fn info(store: &mut StoreContextMut<'_, GuestState>) -> wasmtime::Result<Arc<EdgeInfo>> {
    entry(store)
        .and_then(|e| e.info.clone())
        .ok_or_else(|| wasmtime::format_err!("sluice:edge called outside a request"))
}

fn upstream<'a>(
    store: &'a mut StoreContextMut<'_, GuestState>,
) -> wasmtime::Result<&'a mut Upstream> {
    entry(store)
        .map(|e| &mut e.upstream)
        .ok_or_else(|| wasmtime::format_err!("sluice:edge called outside a request"))
}

/// `value`, unless it is longer than [`MAX_CHOICE_LEN`] (a trap).
fn bounded(what: &str, value: Option<String>) -> wasmtime::Result<Option<String>> {
    match value {
        Some(v) if v.len() > MAX_CHOICE_LEN => Err(wasmtime::format_err!(
            "sluice:edge/upstream: {what} of {} bytes (at most {MAX_CHOICE_LEN})",
            v.len()
        )),
        v => Ok(v),
    }
}
