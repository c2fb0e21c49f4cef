//! A stream context's callbacks: create, headers, body, trailers, and the end of the
//! stream (done, log, delete). Each answers the [`Action`] the filter asked for.

use super::{Exports, Vm, F2, F3, ROOT_CONTEXT_ID};
use crate::stream::{BodyKind, StreamState};
use crate::HostError;

/// What a stream callback asks the host to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Go on to the next filter.
    Continue,
    /// Hold the stream (buffer the body) until the filter resumes it.
    Pause,
}

impl Vm {
    /// Creates a stream context (`proxy_on_context_create`) and returns its id.
    pub fn create_stream_context(&mut self, stream: &mut StreamState) -> Result<u32, HostError> {
        let id = self.next_context_id;
        self.next_context_id = self
            .next_context_id
            .checked_add(1)
            .unwrap_or(ROOT_CONTEXT_ID + 1);
        self.on_stream(stream, id, |f, s| {
            f.context_create
                .call(s, (id as i32, ROOT_CONTEXT_ID as i32))
        })?;
        Ok(id)
    }

    pub(super) fn action(
        &mut self,
        stream: &mut StreamState,
        ctx: u32,
        pick: fn(&Exports) -> Option<&F3>,
        a: usize,
        eos: bool,
    ) -> Result<Action, HostError> {
        if pick(&self.f).is_none() {
            return Ok(Action::Continue);
        }
        let r = self.on_stream(stream, ctx, |f, s| match pick(f) {
            Some(f) => f.call(s, (ctx as i32, a as i32, eos as i32)),
            None => Ok(0),
        })?;
        Ok(if r == 1 {
            Action::Pause
        } else {
            Action::Continue
        })
    }

    /// `proxy_on_request_headers`.
    pub fn on_request_headers(
        &mut self,
        stream: &mut StreamState,
        ctx: u32,
        eos: bool,
    ) -> Result<Action, HostError> {
        let n = stream.request_headers.len();
        self.action(stream, ctx, |f| f.request_headers.as_ref(), n, eos)
    }

    /// `proxy_on_response_headers`.
    pub fn on_response_headers(
        &mut self,
        stream: &mut StreamState,
        ctx: u32,
        eos: bool,
    ) -> Result<Action, HostError> {
        let n = stream.response_headers.len();
        self.action(stream, ctx, |f| f.response_headers.as_ref(), n, eos)
    }

    /// `proxy_on_request_body` / `proxy_on_response_body` over `stream.body`.
    pub fn on_body(
        &mut self,
        stream: &mut StreamState,
        ctx: u32,
        kind: BodyKind,
        eos: bool,
    ) -> Result<Action, HostError> {
        let pick: fn(&Exports) -> Option<&F3> = match kind {
            BodyKind::Request => |f| f.request_body.as_ref(),
            BodyKind::Response => |f| f.response_body.as_ref(),
        };
        stream.body_kind = Some(kind);
        let n = stream.body.len();
        let r = self.action(stream, ctx, pick, n, eos);
        stream.body_kind = None;
        r
    }

    /// `proxy_on_request_trailers` / `proxy_on_response_trailers`.
    pub fn on_trailers(
        &mut self,
        stream: &mut StreamState,
        ctx: u32,
        kind: BodyKind,
    ) -> Result<Action, HostError> {
        let (pick, n): (fn(&Exports) -> Option<&F2>, usize) = match kind {
            BodyKind::Request => (
                |f| f.request_trailers.as_ref(),
                stream.request_trailers.len(),
            ),
            BodyKind::Response => (
                |f| f.response_trailers.as_ref(),
                stream.response_trailers.len(),
            ),
        };
        if pick(&self.f).is_none() {
            return Ok(Action::Continue);
        }
        let r = self.on_stream(stream, ctx, |f, s| match pick(f) {
            Some(f) => f.call(s, (ctx as i32, n as i32)),
            None => Ok(0),
        })?;
        Ok(if r == 1 {
            Action::Pause
        } else {
            Action::Continue
        })
    }

    /// Calls any exported function with `stream` attached as stream context `ctx`
    /// (tests and fuzzing of the hostcall boundary).
    #[doc(hidden)]
    pub fn call_export(
        &mut self,
        stream: &mut StreamState,
        ctx: u32,
        name: &str,
        args: &[wasmtime::Val],
    ) -> Result<(), HostError> {
        let func = self
            .store
            .data()
            .instance
            .and_then(|i| i.get_func(&mut self.store, name))
            .ok_or_else(|| HostError::NotProxyWasm(format!("no export {name}")))?;
        let n = func.ty(&self.store).results().len();
        let mut results = vec![wasmtime::Val::I32(0); n];
        self.on_stream(stream, ctx, |_, s| func.call(s, args, &mut results))
    }

    /// Ends a stream context: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    pub fn finish_stream(&mut self, stream: &mut StreamState, ctx: u32) -> Result<(), HostError> {
        self.log_stream(stream, ctx)?;
        self.delete_stream(stream, ctx)
    }

    /// `proxy_on_done` and `proxy_on_log` of a stream context that ended (the stream
    /// attached once for both; each callback gets its own deadline).
    pub fn log_stream(&mut self, stream: &mut StreamState, ctx: u32) -> Result<(), HostError> {
        if self.f.done.is_none() && self.f.log.is_none() {
            return Ok(());
        }
        let deadline = self.deadline_ticks;
        self.on_stream(stream, ctx, |f, s| {
            if let Some(done) = &f.done {
                done.call(&mut *s, ctx as i32)?;
                // As a callback of its own (see `Vm::call`).
                s.set_epoch_deadline(deadline);
                let st = s.data_mut();
                st.limits.memory_hit = false;
                st.guest_fault = None;
            }
            match &f.log {
                Some(log) => log.call(s, ctx as i32),
                None => Ok(()),
            }
        })
    }

    /// `proxy_on_delete`: the stream context is gone.
    pub fn delete_stream(&mut self, stream: &mut StreamState, ctx: u32) -> Result<(), HostError> {
        let st = self.store.data_mut();
        st.paused.remove(&ctx);
        // Fleet operations whose answer the stream will never get.
        st.fleet_tokens.retain(|(_, c)| *c != ctx);
        if self.f.delete.is_some() {
            self.on_stream(stream, ctx, |f, s| match &f.delete {
                Some(delete) => delete.call(s, ctx as i32),
                None => Ok(()),
            })?;
        }
        Ok(())
    }
}
