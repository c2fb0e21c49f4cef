//! Choosing and judging upstream peers: the consistent-hash key, failures, retries.

use pingora::prelude::*;
use pingora::upstreams::peer::Peer;

use crate::metrics::metrics;
use crate::policy::HashKey;
use crate::upstream::UpstreamPool;

use super::{props, Ctx};

/// The consistent-hash key: what a filter set in `sluice.upstream.hash_key`, else the
/// pool's `hash_key` source.
pub(super) fn hash_key(session: &Session, ctx: &Ctx, pool: &UpstreamPool) -> Vec<u8> {
    if let Some(k) = ctx.stream.filter_state.get(props::HASH_KEY) {
        return k.clone();
    }
    if pool.def.balance != crate::policy::Balance::ConsistentHash {
        return Vec::new();
    }
    let req = session.req_header();
    match &pool.def.hash_key {
        HashKey::SourceIp => session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string().into_bytes())
            .unwrap_or_default(),
        HashKey::Path => req.uri.path().as_bytes().to_vec(),
        HashKey::Header(h) => req
            .headers
            .get(h.as_str())
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
        HashKey::Cookie(name) => req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
            .filter_map(|kv| {
                let kv = kv.trim_ascii();
                let eq = kv.iter().position(|b| *b == b'=')?;
                (kv[..eq] == *name.as_bytes()).then(|| kv[eq + 1..].to_vec())
            })
            .next()
            .unwrap_or_default(),
        HashKey::Query(arg) => req
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k == arg)
            .map(|(_, v)| v.as_bytes().to_vec())
            .unwrap_or_default(),
    }
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
