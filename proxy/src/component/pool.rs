//! The way out of a component chain: a route's pool (the last middleware's next handler,
//! or the policy's pool a middleware chose with `sluice:edge/upstream`) and the policy's
//! pools by name (every guest's `wasi:http/client`), reached as the pool says
//! ([`Dialer`]: TLS, HTTP/2, timeouts), bodies streamed both ways; a guest never reaches
//! the network by itself, nor any pool but the policy's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::dial::{Dialer, Sender};
use crate::host::component::{EdgeInfo, ErrorCode, Next, Upstream, WasiBody};
use crate::metrics::metrics;
use crate::policy::Balance;
use crate::upstream::UpstreamPool;

/// A pool and how its peers are reached.
struct Way {
    pool: Arc<UpstreamPool>,
    dialer: Result<Dialer, String>,
}

impl Way {
    fn new(pool: Arc<UpstreamPool>) -> Arc<Way> {
        let dialer = Dialer::new(&pool);
        if let Err(e) = &dialer {
            tracing::warn!(pool = %pool.def.name, error = %e, "components cannot reach this pool");
        }
        Arc::new(Way { pool, dialer })
    }
}

/// A policy's pools by name, each with its dialer: built once per policy, shared by
/// every route's chain and by the guests' `wasi:http/client`.
#[derive(Clone)]
pub struct Ways(Arc<HashMap<String, Arc<Way>>>);

impl Ways {
    /// The ways to `pools` (a policy's, by their names).
    pub fn new(pools: &[Arc<UpstreamPool>]) -> Ways {
        Ways(Arc::new(
            pools
                .iter()
                .map(|p| (p.def.name.clone(), Way::new(p.clone())))
                .collect(),
        ))
    }

    fn get(&self, name: &str) -> Option<Arc<Way>> {
        self.0.get(name).cloned()
    }
}

/// The next handler that sends a request to a peer of the pool `pool` (a route's), or
/// of the pool the request's `sluice:edge/upstream` choice names: one of `ways` only,
/// `destination-not-found` for any other name. A chosen hash key replaces the pool's
/// `hash_key` (a pool that does not balance by consistent hashing ignores it).
pub fn to_pool(pool: Arc<UpstreamPool>, ways: &Ways) -> Next {
    let own = ways
        .get(&pool.def.name)
        .unwrap_or_else(|| Way::new(pool.clone()));
    let ways = ways.clone();
    Arc::new(move |req| {
        let choice = req.extensions().get::<Arc<Upstream>>().cloned();
        let way = match choice.as_ref().and_then(|c| c.pool.as_deref()) {
            None => Some(own.clone()),
            Some(name) => ways.get(name),
        };
        let hash_key = choice.and_then(|c| c.hash_key.clone());
        Box::pin(async move {
            match way {
                Some(w) => send(w, req, hash_key).await,
                None => Err(ErrorCode::DestinationNotFound),
            }
        })
    })
}

/// `wasi:http/client` for guests: the authority of the request names the pool
/// (`http://POOL/path`); any other authority is refused (`destination-not-found`).
pub fn by_authority(ways: &Ways) -> Next {
    let ways = ways.clone();
    Arc::new(move |req| {
        let way = req.uri().host().and_then(|h| ways.get(h));
        Box::pin(async move {
            match way {
                Some(w) => send(w, req, None).await,
                None => Err(ErrorCode::DestinationNotFound),
            }
        })
    })
}

/// Sends `req` to a peer of the pool and answers its response, body streamed;
/// `hash_key`: a middleware's consistent-hash key for it.
async fn send(
    way: Arc<Way>,
    req: http::Request<WasiBody>,
    hash_key: Option<String>,
) -> Result<http::Response<WasiBody>, ErrorCode> {
    let pool = &way.pool;
    let dialer = way
        .dialer
        .as_ref()
        .map_err(|e| ErrorCode::InternalError(Some(e.clone())))?;
    // A consistent-hash pool picks by its key, as for a request from a route: the
    // client's address (`source_ip`) is the one of the request's `sluice:edge` facts,
    // which a middleware's request carries; a key a middleware chose comes first.
    let key = match hash_key {
        Some(k) if pool.def.balance == Balance::ConsistentHash => k.into_bytes(),
        _ => pool.hash_key_of(req.uri(), req.headers(), || {
            req.extensions()
                .get::<Arc<EdgeInfo>>()
                .and_then(|i| i.client_address.clone())
        }),
    };
    let (addr, mut sender) = connect_with_retries(pool, dialer, &key).await?;
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    // The authority: the guest's `Host`, else its request's, else the peer.
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_else(|| addr.to_string());
    if dialer.h2() {
        // HTTP/2 carries the authority as `:authority`, not `Host`.
        parts.headers.remove(http::header::HOST);
        let scheme = if dialer.tls() { "https" } else { "http" };
        parts.uri = format!("{scheme}://{host}{path}")
            .parse()
            .map_err(|_| ErrorCode::HttpRequestUriInvalid)?;
        parts.version = http::Version::HTTP_2;
    } else {
        // Origin-form on the wire.
        if let Ok(v) = http::HeaderValue::from_str(&host) {
            parts.headers.insert(http::header::HOST, v);
        }
        parts.uri = path.parse().map_err(|_| ErrorCode::HttpRequestUriInvalid)?;
        parts.version = http::Version::HTTP_11;
    }
    let res = match dialer
        .send(&mut sender, http::Request::from_parts(parts, body))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            pool.failed(addr);
            return Err(e);
        }
    };
    pool.succeeded(addr);
    dialer.release(addr, sender);
    Ok(res.map(incoming))
}

/// A connection to a peer of `pool`, picked by `key`. A peer that refuses or fails the
/// connection (TCP or TLS: nothing of the request reached it) is counted as failed and
/// another peer not tried yet is picked, up to the pool's `retries`, as for a route's
/// request (`docs/POLICY.md`, `retries`). The error is the last peer's.
async fn connect_with_retries(
    pool: &UpstreamPool,
    dialer: &Dialer,
    key: &[u8],
) -> Result<(SocketAddr, Sender), ErrorCode> {
    let mut tried: smallvec::SmallVec<[SocketAddr; 2]> = smallvec::SmallVec::new();
    let mut last = ErrorCode::DestinationUnavailable;
    while tried.len() <= pool.def.retries {
        let Some(addr) = pool.select(key, &tried) else {
            break;
        };
        if !tried.is_empty() {
            metrics()
                .upstream_retries
                .with_label_values(&[pool.def.name.as_str()])
                .inc();
        }
        match dialer.connect(addr).await {
            Ok(sender) => return Ok((addr, sender)),
            Err(e) => {
                pool.failed(addr);
                tried.push(addr);
                last = e;
            }
        }
    }
    Err(last)
}

/// A hyper response body as the body type `wasmtime-wasi-http` streams.
fn incoming(body: Incoming) -> WasiBody {
    body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync()
}
