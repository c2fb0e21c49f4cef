//! The root context's callbacks: ticks, queue wake-ups and HTTP call responses.

use wasmtime::Store;

use super::{Exports, Vm, ROOT_CONTEXT_ID};
use crate::callout::CallResult;
use crate::fleet::{FleetReply, FleetStatus};
use crate::state::HostState;
use crate::stream::StreamState;
use crate::HostError;

impl Vm {
    /// `proxy_on_tick` on the root context.
    pub fn on_tick(&mut self) -> Result<(), HostError> {
        if self.f.tick.is_none() {
            return Ok(());
        }
        self.call(self.deadline_ticks, |f, s| match &f.tick {
            Some(tick) => tick.call(s, ROOT_CONTEXT_ID as i32),
            None => Ok(()),
        })
    }

    /// `proxy_on_queue_ready` on the root context.
    pub fn on_queue_ready(&mut self, queue_id: u32) -> Result<(), HostError> {
        if self.f.queue_ready.is_none() {
            return Ok(());
        }
        self.call(self.deadline_ticks, |f, s| match &f.queue_ready {
            Some(ready) => ready.call(s, (ROOT_CONTEXT_ID as i32, queue_id as i32)),
            None => Ok(()),
        })
    }

    /// Delivers a call's outcome with `proxy_on_http_call_response` (with the root
    /// context's id, and the dispatching stream attached when a stream dispatched it). A failed
    /// call is delivered with no headers, no body and no trailers, as Envoy does.
    pub fn on_http_call_response(
        &mut self,
        stream: Option<&mut StreamState>,
        ctx: u32,
        token: u32,
        result: CallResult,
    ) -> Result<(), HostError> {
        let fleet = &mut self.store.data_mut().fleet_tokens;
        if let Some(at) = fleet.iter().position(|(t, _)| *t == token) {
            fleet.swap_remove(at);
            return self.on_foreign_function(stream, ctx, token, result);
        }
        if self.f.http_call_response.is_none() {
            return Ok(());
        }
        let (response, status) = match result {
            Ok(r) => (r, (0, Vec::new())),
            Err(e) => (Default::default(), (14, e.into_bytes())),
        };
        let (h, b, t) = (
            response.headers.len(),
            response.body.len(),
            response.trailers.len(),
        );
        let st = self.store.data_mut();
        st.call_response = Some(response);
        st.status = status;
        // The spec and the reference host pass the root context's id (the plugin's
        // context that owns the call); SDKs find the dispatching stream by token. The
        // stream stays attached and effective, so header and continue calls act on it.
        let args = (
            ROOT_CONTEXT_ID as i32,
            token as i32,
            h as i32,
            b as i32,
            t as i32,
        );
        let r = self.on_caller(stream, ctx, |f, s| match &f.http_call_response {
            Some(f) => f.call(s, args),
            None => Ok(()),
        });
        self.store.data_mut().call_response = None;
        r
    }

    /// Delivers a fleet operation's outcome with `proxy_on_foreign_function(context,
    /// token, size)`: to the stream context that started it (the stream attached and
    /// effective), or to the root context; the data (a [`crate::fleet::FleetReply`]) is
    /// buffer 8. A call that failed before the store answered arrives as
    /// [`crate::fleet::FleetStatus::Error`] with its message.
    fn on_foreign_function(
        &mut self,
        stream: Option<&mut StreamState>,
        ctx: u32,
        token: u32,
        result: CallResult,
    ) -> Result<(), HostError> {
        if self.f.foreign_function.is_none() {
            return Ok(());
        }
        let data = match result {
            Ok(r) => r.body,
            Err(e) => FleetReply::Failed(FleetStatus::Error, e).encode(),
        };
        let args = (ctx as i32, token as i32, data.len() as i32);
        self.store.data_mut().call_data = Some(data);
        let r = self.on_caller(stream, ctx, |f, s| match &f.foreign_function {
            Some(f) => f.call(s, args),
            None => Ok(()),
        });
        self.store.data_mut().call_data = None;
        r
    }

    /// Runs a completion callback on the context that started the call: its stream
    /// attached and effective when a stream started it, else the root context.
    fn on_caller(
        &mut self,
        stream: Option<&mut StreamState>,
        ctx: u32,
        call: impl FnOnce(&Exports, &mut Store<HostState>) -> wasmtime::Result<()>,
    ) -> Result<(), HostError> {
        match stream {
            Some(stream) => self.on_stream(stream, ctx, call),
            None => self.call(self.deadline_ticks, call),
        }
    }
}
