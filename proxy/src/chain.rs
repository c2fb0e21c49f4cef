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

mod calls;
mod late;
mod local_reply;

use late::InFlight;
pub use late::Late;
pub use local_reply::with_content_type;

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
    /// Every callback's duration: filter index, phase, microseconds (kept only for the
    /// access log: see [`Chain::new`]).
    pub timings: Vec<(u16, Phase, u32)>,
    /// Whether `timings` are kept.
    timed: bool,
    /// A filter paused the response headers with a body to follow ([`Chain::response_head_held`]).
    head_held: bool,
}

enum Step {
    Go(Action),
    Stop(Outcome),
}

/// The clock of one walk of a phase along the chain: a callback's end is the next
/// one's start, so that N callbacks read the clock N + 1 times instead of 2N (a reading
/// costs 40-125 ns on a VM whose `rdtsc` traps). What runs between two callbacks of a
/// walk (matching the step) counts towards the next: nanoseconds.
#[derive(Default)]
struct Laps(Option<Instant>);

impl Laps {
    /// When the next callback starts: the previous one's end, or now.
    fn start(&mut self) -> Instant {
        self.0.take().unwrap_or_else(Instant::now)
    }

    /// Now, the end of a callback (and the start of the next).
    fn end(&mut self) -> Instant {
        let now = Instant::now();
        self.0 = Some(now);
        now
    }
}

impl Chain {
    /// A chain over `filters` (in request order); `timed`: keep each callback's
    /// duration for the access log ([`Chain::timings_text`]). The metrics time every
    /// callback either way.
    pub fn new(filters: Arc<[Arc<Filter>]>, timed: bool) -> Chain {
        let slots = filters.iter().map(|_| Slot::default()).collect();
        // Context create, both headers phases, a body chunk or two, each filter.
        let timings = if timed {
            Vec::with_capacity(filters.len() * 6)
        } else {
            Vec::new()
        };
        Chain {
            filters,
            slots,
            calls: Vec::new(),
            in_flight: Vec::new(),
            timings,
            timed,
            head_held: false,
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
    /// and turns failures into the filter's failure policy. `laps` times it (the walk
    /// along the chain this callback is part of).
    fn run(
        &mut self,
        laps: &mut Laps,
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
            timed,
            ..
        } = self;
        let filter = &filters[i];
        let slot = &mut slots[i];
        let started = laps.start();
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
        let took = laps.end().saturating_duration_since(started);
        let pm = filter.metrics.phase(phase);
        pm.invocations.inc();
        pm.duration.observe(took.as_secs_f64());
        if *timed {
            timings.push((
                i as u16,
                phase,
                took.as_micros().min(u32::MAX as u128) as u32,
            ));
        }
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

    /// True when a filter paused the response-headers phase with a body to follow
    /// (Envoy's `StopIteration`): the response head is not sent before the body flows on
    /// from the chain (a body callback of that filter answering `Continue`, or the end of
    /// the body), and a local response a body callback sends meanwhile replaces the whole
    /// response. Sluice's request loop honours it (`forward::relay`, HTTP/1 requests and
    /// HTTP/2 streams, pool and component routes); only WebSocket upgrades to a pool, on
    /// pingora-proxy, do not.
    pub fn response_head_held(&self) -> bool {
        self.head_held
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
        let mut laps = Laps::default();
        for k in start..n {
            let i = self.nth(kind, k);
            stream.resumed = false;
            let phase = match kind {
                BodyKind::Request => Phase::RequestHeaders,
                BodyKind::Response => Phase::ResponseHeaders,
            };
            let step = self.run(&mut laps, i, kind, phase, stream, |vm, ctx, s| match kind {
                BodyKind::Request => vm.on_request_headers(s, ctx, eos),
                BodyKind::Response => vm.on_response_headers(s, ctx, eos),
            });
            match step {
                Step::Stop(o) => return o,
                Step::Go(Action::Pause) if self.calls.iter().any(|(f, _)| *f == i) => {
                    return Outcome::Wait(i)
                }
                Step::Go(Action::Pause) if eos => return Outcome::Paused(i),
                Step::Go(Action::Pause) if kind == BodyKind::Response => self.head_held = true,
                Step::Go(_) => {}
            }
        }
        Outcome::Continue
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
        let mut laps = Laps::default();
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
            let step = self.run(&mut laps, i, kind, phase, stream, |vm, ctx, s| {
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
