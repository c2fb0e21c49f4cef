//! Pauses and HTTP calls: a filter that holds the stream until it resumes it, and the
//! calls filters dispatch, handed out to be sent and their results delivered.

use super::*;

impl Chain {
    /// Holds filter `i`'s stream context paused: resolves when the filter resumes it
    /// from any callback. [`Chain::unpause`] ends the pause either way.
    pub fn pause(&self, i: usize) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let (ctx, inc) = self.slots.get(i)?.ctx?;
        self.filters[i].plugin.pause(ctx, inc).ok()
    }

    /// Ends filter `i`'s pause (resumed or expired).
    pub fn unpause(&self, i: usize) {
        if let Some((ctx, _)) = self.slots.get(i).and_then(|s| s.ctx) {
            self.filters[i].plugin.unpause(ctx);
        }
    }

    /// Filter `i` paused and never resumed within the request's time: answers 504.
    pub fn pause_expired(&self, i: usize, stream: &mut StreamState) -> Outcome {
        let name = &self.filters[i].plugin.info.name;
        tracing::error!(filter = %name, request_id = %stream.info.id, "filter paused the stream and did not resume it in time");
        stream.local_response = Some(LocalResponse {
            status: 504,
            details: format!("filter {name} paused and never resumed"),
            body: format!("filter {name} paused the request and did not resume it\n").into_bytes(),
            headers: vec![("content-type".into(), b"text/plain".to_vec())],
        });
        Outcome::Respond
    }

    /// True when callbacks dispatched HTTP calls not sent yet.
    pub fn has_calls(&self) -> bool {
        !self.calls.is_empty()
    }

    /// The HTTP calls dispatched so far, to be sent.
    pub fn take_calls(&mut self) -> Vec<(usize, HttpCallRequest)> {
        std::mem::take(&mut self.calls)
    }

    /// Delivers one call's result to filter `i` (`proxy_on_http_call_response`).
    /// `Continue` when the chain may go on; otherwise how it stopped.
    pub fn deliver(
        &mut self,
        i: usize,
        kind: BodyKind,
        stream: &mut StreamState,
        call: &HttpCallRequest,
        result: CallResult,
    ) -> Outcome {
        let (ctx, token) = (call.context_id, call.token);
        let mut laps = Laps::default();
        match self.run(
            &mut laps,
            i,
            kind,
            Phase::HttpCallResponse,
            stream,
            |vm, _, s| {
                vm.on_http_call_response(Some(s), ctx, token, result)
                    .map(|_| Action::Continue)
            },
        ) {
            Step::Stop(o) => o,
            Step::Go(_) => Outcome::Continue,
        }
    }
}
