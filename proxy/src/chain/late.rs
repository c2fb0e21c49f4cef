//! The end of a request whose filters still wait for HTTP call responses.

use super::*;

/// A call sent from a body or log phase, with the filter that dispatched it.
pub(super) struct InFlight {
    pub(super) filter: usize,
    pub(super) call: HttpCallRequest,
    pub(super) answer: tokio::task::JoinHandle<CallResult>,
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

    pub(super) fn delete(&self, stream: &mut StreamState) {
        for (filter, ctx) in self.filters.iter().zip(&self.contexts) {
            if let Some(ctx) = *ctx {
                delete_context(filter, ctx, stream);
            }
        }
    }
}

/// `proxy_on_delete` of `filter`'s stream context `(id, incarnation)`, if its VM still
/// holds it.
fn delete_context(filter: &Filter, (ctx, inc): (u32, u64), stream: &mut StreamState) {
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

impl Chain {
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
        if self.in_flight.is_empty() {
            // Nothing to wait for: the contexts are deleted now.
            for (filter, slot) in self.filters.iter().zip(self.slots.iter_mut()) {
                if let Some(ctx) = slot.ctx.take() {
                    delete_context(filter, ctx, stream);
                }
            }
            return None;
        }
        let late = Late {
            filters: self.filters.clone(),
            contexts: self.slots.iter_mut().map(|s| s.ctx.take()).collect(),
            calls: std::mem::take(&mut self.in_flight),
        };
        Some(late)
    }
}
