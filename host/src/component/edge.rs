//! `sluice:edge@0.1.0` (`wit/sluice-edge/edge.wit`): the optional Sluice imports of a
//! component guest, and the per-request facts they return ([`EdgeInfo`]).
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
//! [`CompiledComponent::imports_edge`]: super::CompiledComponent::imports_edge

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::{GuestTaskId, Linker};
use wasmtime::StoreContextMut;

use super::state::GuestState;

/// The interface's name, as a component imports it.
pub const REQUEST_INFO: &str = "sluice:edge/request-info@0.1.0";

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

/// The facts of the requests an instance serves, by the guest task serving each.
#[derive(Default)]
pub(crate) struct Requests {
    by_task: HashMap<GuestTaskId, Arc<EdgeInfo>>,
}

impl Requests {
    /// Records `info` as the facts of the request `task` serves (none: the request came
    /// without facts; a stale entry of a reused task slot is dropped).
    pub(crate) fn start(&mut self, task: GuestTaskId, info: Option<Arc<EdgeInfo>>) {
        match info {
            Some(info) => {
                if self.by_task.len() >= MAX_TRACKED && !self.by_task.contains_key(&task) {
                    self.by_task.clear();
                }
                self.by_task.insert(task, info);
            }
            None => {
                self.by_task.remove(&task);
            }
        }
    }
}

/// The facts of the request the calling task serves (the root of its call stack).
pub(crate) fn current(store: &mut StoreContextMut<'_, GuestState>) -> Option<Arc<EdgeInfo>> {
    let root = store.async_call_stack().ok()?.last()?;
    store.data().requests.by_task.get(&root).cloned()
}

/// Adds `sluice:edge/request-info` to `linker`. A call outside any request's task (none
/// recorded) traps: the host never runs a guest without one.
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
    Ok(())
}

fn info(store: &mut StoreContextMut<'_, GuestState>) -> wasmtime::Result<Arc<EdgeInfo>> {
    current(store).ok_or_else(|| wasmtime::format_err!("sluice:edge called outside a request"))
}
