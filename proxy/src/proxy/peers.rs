//! Choosing and judging upstream peers: the consistent-hash key, failures, retries.

use crate::downstream::Downstream;
use pingora::prelude::*;
use pingora::upstreams::peer::Peer;

use crate::metrics::metrics;
use crate::upstream::UpstreamPool;

use super::{props, Ctx};

/// The consistent-hash key: what a filter set in `sluice.upstream.hash_key`, else the
/// pool's `hash_key` source.
pub(super) fn hash_key(session: &Downstream<'_>, ctx: &Ctx, pool: &UpstreamPool) -> Vec<u8> {
    if let Some(k) = ctx.stream.filter_state.get(props::HASH_KEY) {
        return k.clone();
    }
    let req = session.req_header();
    pool.hash_key_of(&req.uri, &req.headers, || {
        session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
    })
}

/// Counts a failure of `peer` (connect, proxy) and tells its pool (passive ejection).
pub(super) fn peer_failed(pool: &UpstreamPool, peer: &HttpPeer) {
    metrics()
        .upstream_errors
        .with_label_values(&[pool.def.name.as_str(), &peer.address().to_string()])
        .inc();
    if let Some(addr) = peer.address().as_inet() {
        pool.failed(*addr);
    }
}

/// May this request try one more peer: within the pool's `retries`, and an untried peer left?
pub(super) fn retries_left(pool: &UpstreamPool, ctx: &Ctx) -> bool {
    ctx.tried.len() <= pool.def.retries && ctx.tried.len() < pool.def.peers.len()
}
