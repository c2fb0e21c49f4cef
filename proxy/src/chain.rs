//! Runs one phase of a route's filter chain: request phases in chain order, response
//! phases in reverse (as Envoy does). Folds each filter's answer (continue, pause,
//! local response, reset) and applies its failure policy when it traps. Knows no
//! guest memory and no Pingora.
//!
//! Bodies follow Envoy's buffering model: a filter that pauses on a chunk keeps the
//! data it has seen; when it continues (or the stream ends) everything it buffered
//! flows on to the next filter.

use std::sync::Arc;
use std::time::Instant;

use crate::host::callout::Callouts;
use crate::host::{
    Action, BodyKind, CallResult, HeaderMap, HostError, HttpCallRequest, LocalResponse, StreamState,
};
use crate::metrics::metrics;
use crate::phase::{Phase, Verdict};
use crate::policy::OnFailure;
use crate::snapshot::Filter;

/// How a phase ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Go on with the request.
    Continue,
    /// A filter answered locally: `StreamState::local_response` holds the answer.
    Respond,
    /// A filter reset the stream.
    Reset,
    /// Filter `n` paused and dispatched HTTP calls: send them ([`Chain::take_calls`]),
    /// deliver the results ([`Chain::deliver`]), then resume after it.
    Wait(usize),
    /// Filter `n` paused a headers phase with no body to follow: hold the stream
    /// ([`Chain::pause`]) until it calls `proxy_continue_stream`, then resume after it.
    Paused(usize),
}

#[derive(Default)]
struct Slot {
    /// Stream context id and the VM incarnation that owns it.
    ctx: Option<(u32, u64)>,
    /// Body bytes this filter holds while it pauses.
    held: Vec<u8>,
    /// The filter failed with `fail_open`: skipped for the rest of the request.
    skipped: bool,
}

/// The chain's state for one request.
pub struct Chain {
    filters: Arc<[Arc<Filter>]>,
    slots: Vec<Slot>,
    /// HTTP calls dispatched by callbacks, with the filter that dispatched them.
    calls: Vec<(usize, HttpCallRequest)>,
    /// Calls dispatched from body phases, sent at once ([`Chain::launch`]); their
    /// responses are delivered before the stream contexts are deleted.
    in_flight: Vec<InFlight>,
    /// Every callback's duration: filter index, phase, microseconds.
    pub timings: Vec<(u16, Phase, u32)>,
}

enum Step {
    Go(Action),
    Stop(Outcome),
}

impl Chain {
    /// A chain over `filters` (in request order).
    pub fn new(filters: Arc<[Arc<Filter>]>) -> Chain {
        let slots = filters.iter().map(|_| Slot::default()).collect();
        // Context create, both headers phases, a body chunk or two, each filter.
        let timings = Vec::with_capacity(filters.len() * 6);
        Chain {
            filters,
            slots,
            calls: Vec::new(),
            in_flight: Vec::new(),
            timings,
        }
    }

    /// True when the route has no filter.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// The filter that runs `k`-th in a phase of `kind`: chain order for requests,
    /// reverse for responses.
    fn nth(&self, kind: BodyKind, k: usize) -> usize {
        match kind {
            BodyKind::Request => k,
            BodyKind::Response => self.filters.len() - 1 - k,
        }
    }

    /// Runs one callback of filter `i`, creating its stream context first if needed,
    /// and turns failures into the filter's failure policy.
    fn run(
        &mut self,
        i: usize,
        kind: BodyKind,
        phase: Phase,
        stream: &mut StreamState,
        cb: impl FnOnce(&mut crate::host::Vm, u32, &mut StreamState) -> Result<Action, HostError>,
    ) -> Step {
        if self.slots[i].skipped {
            return Step::Go(Action::Continue);
        }
        let Chain {
            filters,
            slots,
            calls: chain_calls,
            timings,
            ..
        } = self;
        let filter = &filters[i];
        let slot = &mut slots[i];
        let started = Instant::now();
        let result = filter.plugin.with_vm(|vm, incarnation| {
            let ctx = match slot.ctx {
                Some((id, inc)) if inc == incarnation => id,
                Some(_) => return Err(HostError::ContextLost),
                None => {
                    let id = vm.create_stream_context(stream)?;
                    slot.ctx = Some((id, incarnation));
                    id
                }
            };
            let r = cb(vm, ctx, stream);
            let calls = vm.take_pending_calls();
            Ok((r, calls))
        });
        let result = result.and_then(|r| r).and_then(|(r, calls)| {
            chain_calls.extend(calls.into_iter().map(|c| (i, c)));
            r
        });
        let took = started.elapsed();
        let pm = filter.metrics.phase(phase);
        pm.invocations.inc();
        pm.duration.observe(took.as_secs_f64());
        timings.push((
            i as u16,
            phase,
            took.as_micros().min(u32::MAX as u128) as u32,
        ));
        match result {
            Ok(action) => {
                if stream.closed {
                    pm.verdict(Verdict::Reset).inc();
                    Step::Stop(Outcome::Reset)
                } else if let Some(local) = &stream.local_response {
                    pm.verdict(Verdict::LocalResponse).inc();
                    metrics()
                        .filter_local_responses
                        .with_label_values(&[
                            filter.plugin.info.name.as_str(),
                            &local.status.to_string(),
                        ])
                        .inc();
                    Step::Stop(Outcome::Respond)
                } else {
                    let verdict = if action == Action::Pause {
                        Verdict::Pause
                    } else {
                        Verdict::Continue
                    };
                    pm.verdict(verdict).inc();
                    Step::Go(action)
                }
            }
            Err(e) => fail(filter, slot, kind, stream, e),
        }
    }

    /// Waits until every filter of the chain has a VM on this thread (started off the
    /// request path when missing; see [`crate::host::Plugin::ready`]). A filter that
    /// cannot get one (crash-looping, start-up failed) gets its failure policy.
    pub async fn ready(&mut self, stream: &mut StreamState) -> Outcome {
        for i in 0..self.filters.len() {
            if self.slots[i].skipped || self.slots[i].ctx.is_some() {
                continue;
            }
            let filter = self.filters[i].clone();
            if let Err(e) = filter.plugin.ready().await {
                if let Step::Stop(o) =
                    fail(&filter, &mut self.slots[i], BodyKind::Request, stream, e)
                {
                    return o;
                }
            }
        }
        Outcome::Continue
    }

    /// The request-headers phase, in chain order. A filter that pauses here is asked
    /// again with the body (its body callback answering `Continue` ends the pause, as
    /// on Envoy); with no body to follow, the stream is held ([`Outcome::Paused`])
    /// until the filter calls `proxy_continue_stream`, from any callback.
    pub fn request_headers(&mut self, stream: &mut StreamState, end_of_stream: bool) -> Outcome {
        self.headers(stream, BodyKind::Request, end_of_stream)
    }

    /// The response-headers phase, in reverse chain order.
    pub fn response_headers(&mut self, stream: &mut StreamState, end_of_stream: bool) -> Outcome {
        self.headers(stream, BodyKind::Response, end_of_stream)
    }

    fn headers(&mut self, stream: &mut StreamState, kind: BodyKind, eos: bool) -> Outcome {
        self.headers_after(stream, kind, eos, None)
    }

    /// Resumes a headers phase after filter `after` answered its HTTP calls.
    pub fn resume_headers(
        &mut self,
        stream: &mut StreamState,
        kind: BodyKind,
        eos: bool,
        after: usize,
    ) -> Outcome {
        if !self.calls.is_empty() {
            return Outcome::Wait(after);
        }
        self.headers_after(stream, kind, eos, Some(after))
    }

    fn headers_after(
        &mut self,
        stream: &mut StreamState,
        kind: BodyKind,
        eos: bool,
        after: Option<usize>,
    ) -> Outcome {
        let n = self.filters.len();
        // `nth` is its own inverse: the position of filter `a` in the phase's order.
        let start = after
            .filter(|a| *a < n)
            .map_or(0, |a| self.nth(kind, a) + 1);
        for k in start..n {
            let i = self.nth(kind, k);
            stream.resumed = false;
            let phase = match kind {
                BodyKind::Request => Phase::RequestHeaders,
                BodyKind::Response => Phase::ResponseHeaders,
            };
            let step = self.run(i, kind, phase, stream, |vm, ctx, s| match kind {
                BodyKind::Request => vm.on_request_headers(s, ctx, eos),
                BodyKind::Response => vm.on_response_headers(s, ctx, eos),
            });
            match step {
                Step::Stop(o) => return o,
                Step::Go(Action::Pause) if self.calls.iter().any(|(f, _)| *f == i) => {
                    return Outcome::Wait(i)
                }
                Step::Go(Action::Pause) if eos => return Outcome::Paused(i),
                Step::Go(_) => {}
            }
        }
        Outcome::Continue
    }

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
        match self.run(i, kind, Phase::HttpCallResponse, stream, |vm, _, s| {
            vm.on_http_call_response(Some(s), ctx, token, result)
                .map(|_| Action::Continue)
        }) {
            Step::Stop(o) => o,
            Step::Go(_) => Outcome::Continue,
        }
    }

    /// Passes one body chunk through the chain. Returns what flows on now (possibly
    /// nothing while a filter pauses), or how the phase stopped. Holding more than
    /// `stream.max_buffer_bytes` in one filter answers 413 (request) or 502 (response).
    pub fn body(
        &mut self,
        stream: &mut StreamState,
        kind: BodyKind,
        mut data: Vec<u8>,
        eos: bool,
    ) -> Result<Vec<u8>, Outcome> {
        for k in 0..self.filters.len() {
            let i = self.nth(kind, k);
            if self.slots[i].skipped {
                continue;
            }
            let mut held = std::mem::take(&mut self.slots[i].held);
            if held.is_empty() {
                held = data;
            } else {
                held.extend_from_slice(&data);
            }
            stream.body = held;
            let phase = match kind {
                BodyKind::Request => Phase::RequestBody,
                BodyKind::Response => Phase::ResponseBody,
            };
            let step = self.run(i, kind, phase, stream, |vm, ctx, s| {
                vm.on_body(s, ctx, kind, eos)
            });
            let out = std::mem::take(&mut stream.body);
            match step {
                Step::Stop(o) => return Err(o),
                Step::Go(Action::Pause) if !eos => {
                    if out.len() > stream.max_buffer_bytes {
                        let status = if kind == BodyKind::Request { 413 } else { 502 };
                        stream.local_response = Some(LocalResponse {
                            status,
                            details: "body larger than the filters may buffer".into(),
                            body: b"body too large for the filter chain\n".to_vec(),
                            headers: vec![("content-type".into(), b"text/plain".to_vec())],
                        });
                        return Err(Outcome::Respond);
                    }
                    self.slots[i].held = out;
                    return Ok(Vec::new());
                }
                Step::Go(_) => data = out,
            }
        }
        Ok(data)
    }

    /// Runs the local reply in `stream.local_response` through the response callbacks
    /// of the filters that saw the request (those with a stream context, the replying
    /// filter included), last first, as Envoy's filter manager does with a reply sent
    /// while decoding: headers, then the whole body at once. Filters that never ran
    /// (after the replier) and filters that failed are skipped, as Envoy's Wasm filter
    /// skips a stream without a VM context. Returns the reply as the filters left it;
    /// a filter that replies again replaces it (sent as is), `Err` when one resets.
    pub fn local_reply(&mut self, stream: &mut StreamState) -> Result<LocalResponse, Outcome> {
        let Some(local) = stream.local_response.take() else {
            return Err(Outcome::Reset);
        };
        let local = with_content_type(local);
        let mut map = HeaderMap::with_capacity(local.headers.len() + 2, 64);
        map.append(":status", local.status.to_string().as_bytes());
        for (k, v) in &local.headers {
            if !k.starts_with(':') && !k.eq_ignore_ascii_case("content-length") {
                map.append(k, v);
            }
        }
        map.append("content-length", local.body.len().to_string().as_bytes());
        stream.response_headers = map;
        stream.info.response_code = Some(local.status);
        let ran: Vec<usize> = (0..self.filters.len())
            .rev()
            .filter(|i| self.slots[*i].ctx.is_some() && !self.slots[*i].skipped)
            .collect();
        let eos = local.body.is_empty();
        for &i in &ran {
            stream.resumed = false;
            let step = self.run(
                i,
                BodyKind::Response,
                Phase::ResponseHeaders,
                stream,
                |vm, ctx, s| vm.on_response_headers(s, ctx, eos),
            );
            if let Some(again) = self.replied_again(stream, step)? {
                return Ok(again);
            }
        }
        let mut body = local.body;
        if !eos {
            for &i in &ran {
                if self.slots[i].skipped {
                    continue;
                }
                stream.body = body;
                let step = self.run(
                    i,
                    BodyKind::Response,
                    Phase::ResponseBody,
                    stream,
                    |vm, ctx, s| vm.on_body(s, ctx, BodyKind::Response, true),
                );
                body = std::mem::take(&mut stream.body);
                if let Some(again) = self.replied_again(stream, step)? {
                    return Ok(again);
                }
            }
        }
        let status = stream
            .response_headers
            .get(":status")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|c| (100..=999).contains(c))
            .unwrap_or(local.status);
        stream.info.response_code = Some(status);
        let headers = stream
            .response_headers
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        Ok(LocalResponse {
            status,
            details: local.details,
            body,
            headers,
        })
    }

    /// After a callback of the local-reply path: `Some` when the filter sent another
    /// reply (it replaces the first, untouched by filters), `Err` on a reset.
    fn replied_again(
        &mut self,
        stream: &mut StreamState,
        step: Step,
    ) -> Result<Option<LocalResponse>, Outcome> {
        match step {
            Step::Stop(Outcome::Respond) => match stream.local_response.take() {
                Some(again) => {
                    stream.info.response_code = Some(again.status);
                    Ok(Some(with_content_type(again)))
                }
                None => Err(Outcome::Reset),
            },
            Step::Stop(o) => Err(o),
            Step::Go(_) => Ok(None),
        }
    }

    /// The timings as `filter:phase:µs` items, for the access log.
    pub fn timings_text(&self) -> String {
        let mut out = String::new();
        for (i, (f, p, us)) in self.timings.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&format!(
                "{}:{}:{}",
                self.filters[*f as usize].plugin.info.name,
                p.as_str(),
                us
            ));
        }
        out
    }

    /// Sends the HTTP calls body callbacks dispatched, now (no filter waits for them
    /// in a headers phase); their responses are delivered when the request ends.
    pub fn launch(&mut self, callouts: &Arc<dyn Callouts>) {
        for (filter, call) in self.calls.drain(..) {
            let answer = tokio::spawn(callouts.call(call.clone()));
            self.in_flight.push(InFlight {
                filter,
                call,
                answer,
            });
        }
    }

    /// Ends every stream context the request created: `proxy_on_done` and
    /// `proxy_on_log`, then `proxy_on_delete`, unless calls dispatched from body
    /// phases or from the log phase are still out: then the answer is a [`Late`] to
    /// run (spawned on this thread) that delivers their responses to the contexts
    /// (`proxy_on_http_call_response`, the finished stream attached) and deletes them.
    pub fn finish(
        &mut self,
        stream: &mut StreamState,
        callouts: &Arc<dyn Callouts>,
    ) -> Option<Late> {
        for (filter, slot) in self.filters.iter().zip(self.slots.iter()) {
            let Some((ctx, inc)) = slot.ctx else {
                continue;
            };
            let r = filter.plugin.with_vm(|vm, incarnation| {
                let r = if incarnation == inc {
                    vm.log_stream(stream, ctx)
                } else {
                    Ok(())
                };
                (r, vm.take_pending_calls())
            });
            match r {
                Ok((r, calls)) => {
                    let i = self.filters.iter().position(|f| Arc::ptr_eq(f, filter));
                    self.calls
                        .extend(calls.into_iter().map(|c| (i.unwrap_or_default(), c)));
                    if let Err(e) = r {
                        tracing::warn!(filter = %filter.plugin.info.name, request_id = %stream.info.id, error = %e, "filter failed in its log phase");
                    }
                }
                Err(e) => {
                    tracing::warn!(filter = %filter.plugin.info.name, request_id = %stream.info.id, error = %e, "filter failed in its log phase");
                }
            }
        }
        self.launch(callouts);
        let late = Late {
            filters: self.filters.clone(),
            contexts: self.slots.iter_mut().map(|s| s.ctx.take()).collect(),
            calls: std::mem::take(&mut self.in_flight),
        };
        if late.calls.is_empty() {
            late.delete(stream);
            None
        } else {
            Some(late)
        }
    }
}

/// A call sent from a body or log phase, with the filter that dispatched it.
struct InFlight {
    filter: usize,
    call: HttpCallRequest,
    answer: tokio::task::JoinHandle<CallResult>,
}

/// The end of a request whose filters still wait for HTTP call responses: the
/// responses are delivered, then the stream contexts deleted.
pub struct Late {
    filters: Arc<[Arc<Filter>]>,
    /// Each filter's stream context and the VM incarnation that owns it.
    contexts: Vec<Option<(u32, u64)>>,
    calls: Vec<InFlight>,
}

impl Late {
    /// Waits for each call, delivers its response to the context that dispatched it
    /// (if its VM still holds it), then deletes the contexts. Run on the request's
    /// thread (the VMs are per thread).
    pub async fn run(mut self, mut stream: StreamState) {
        for c in std::mem::take(&mut self.calls) {
            let result = c
                .answer
                .await
                .unwrap_or_else(|e| Err(format!("call task failed: {e}")));
            let (Some(filter), Some(Some((ctx, inc)))) =
                (self.filters.get(c.filter), self.contexts.get(c.filter))
            else {
                continue;
            };
            let (ctx, inc) = (*ctx, *inc);
            let r = filter.plugin.with_vm(|vm, incarnation| {
                if incarnation != inc {
                    return Ok(());
                }
                let r = vm.on_http_call_response(Some(&mut stream), ctx, c.call.token, result);
                // Calls dispatched from these late responses are not followed further.
                drop(vm.take_pending_calls());
                r
            });
            if let Err(e) = r.and_then(|r| r) {
                filter.plugin.record_failure(&e);
                tracing::warn!(filter = %filter.plugin.info.name, request_id = %stream.info.id, error = %e, "filter failed in a late call response");
            }
        }
        self.delete(&mut stream);
    }

    fn delete(&self, stream: &mut StreamState) {
        for (filter, ctx) in self.filters.iter().zip(&self.contexts) {
            let Some((ctx, inc)) = *ctx else { continue };
            let r = filter.plugin.with_vm(|vm, incarnation| {
                if incarnation == inc {
                    vm.delete_stream(stream, ctx)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = r.and_then(|r| r) {
                tracing::warn!(filter = %filter.plugin.info.name, request_id = %stream.info.id, error = %e, "filter failed deleting its context");
            }
        }
    }
}

/// A local reply with `content-type: text/plain` when it has a body and the filter
/// set no content type (as Envoy's `sendLocalReply`).
pub fn with_content_type(mut local: LocalResponse) -> LocalResponse {
    if !local.body.is_empty()
        && !local
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        local
            .headers
            .push(("content-type".into(), b"text/plain".to_vec()));
    }
    local
}

/// Applies filter `filter`'s failure policy after `e`, counting and logging it.
fn fail(
    filter: &Filter,
    slot: &mut Slot,
    kind: BodyKind,
    stream: &mut StreamState,
    e: HostError,
) -> Step {
    // Another request's failure replaced the VM that held this stream's context (or
    // its replacement is still starting): not this filter's failure. Response phases
    // go on without the filter; request phases apply its policy.
    let lost = matches!(e, HostError::ContextLost | HostError::VmStarting);
    if lost && kind == BodyKind::Response {
        tracing::warn!(filter = %filter.plugin.info.name, request_id = %stream.info.id, "stream context lost with its VM; filter skipped for the response");
        slot.skipped = true;
        return Step::Go(Action::Continue);
    }
    if !lost {
        filter.plugin.record_failure(&e);
    }
    tracing::error!(filter = %filter.plugin.info.name, request_id = %stream.info.id, error = %e, "filter failed");
    match filter.on_failure {
        OnFailure::Open => {
            slot.skipped = true;
            Step::Go(Action::Continue)
        }
        OnFailure::Closed(status) => {
            // The failed filter's callbacks do not run again, not even for the reply.
            slot.skipped = true;
            stream.local_response = Some(LocalResponse {
                status,
                details: format!("filter {} failed", filter.plugin.info.name),
                body: format!("filter {} failed\n", filter.plugin.info.name).into_bytes(),
                headers: vec![("content-type".into(), b"text/plain".to_vec())],
            });
            Step::Stop(Outcome::Respond)
        }
    }
}
