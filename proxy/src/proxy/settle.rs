//! Driving a headers phase to its end: HTTP calls, pauses and their time limit.

use std::time::Duration;

use crate::chain::{Chain, Outcome};
use crate::host::{BodyKind, StreamState};
use crate::snapshot::Snapshot;

use super::Ctx;

/// Drives a headers phase to its end: while a filter waits for its HTTP calls, sends
/// them, delivers the responses and resumes the chain after that filter; while a
/// filter pauses with no body to follow, holds the stream until it resumes (from any
/// callback: a tick, a call response), at most `limit` (then 504).
pub(super) async fn settle(
    snapshot: &Snapshot,
    chain: &mut Chain,
    stream: &mut StreamState,
    kind: BodyKind,
    eos: bool,
    mut outcome: Outcome,
    limit: Duration,
) -> Outcome {
    loop {
        let waiting = match outcome {
            Outcome::Wait(w) => w,
            Outcome::Paused(p) => {
                let Some(resumed) = chain.pause(p) else {
                    // The context is gone with its VM: the chain goes on (and meets it).
                    outcome = chain.resume_headers(stream, kind, eos, p);
                    continue;
                };
                let r = tokio::time::timeout(limit, resumed).await;
                chain.unpause(p);
                outcome = match r {
                    Ok(_) => chain.resume_headers(stream, kind, eos, p),
                    Err(_) => chain.pause_expired(p, stream),
                };
                continue;
            }
            o => return o,
        };
        stream.resumed = false;
        let calls = chain.take_calls();
        let results =
            futures::future::join_all(calls.iter().map(|(_, c)| snapshot.callouts.call(c.clone())))
                .await;
        outcome = Outcome::Continue;
        for ((filter, call), result) in calls.iter().zip(results) {
            let o = chain.deliver(*filter, kind, stream, call, result);
            if o != Outcome::Continue {
                outcome = o;
                break;
            }
        }
        if outcome == Outcome::Continue {
            outcome = if eos && !stream.resumed && !chain.has_calls() {
                // As on Envoy: the filter stays paused until it resumes the stream.
                Outcome::Paused(waiting)
            } else {
                chain.resume_headers(stream, kind, eos, waiting)
            };
        }
    }
}

/// How long a filter may hold a request paused: the route's pool read timeout (the
/// time the request would wait for its upstream), 60 s without a route.
pub(super) fn pause_limit(ctx: &Ctx) -> Duration {
    ctx.route
        .and_then(|r| ctx.snapshot.routes[r].pool)
        .map(|p| &ctx.snapshot.pools[p].def)
        .map_or(Duration::from_secs(60), |p| {
            Duration::from_millis(p.read_timeout_ms)
        })
}
