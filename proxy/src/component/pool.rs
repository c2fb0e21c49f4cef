//! The way out of a component chain: a route's pool (the last middleware's next handler)
//! and the policy's pools by name (every guest's `wasi:http/client`). HTTP/1.1 over
//! cleartext TCP with hyper, bodies streamed both ways, connections kept alive per peer;
//! a guest never reaches the network by itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::host::component::{ErrorCode, Next, WasiBody};
use crate::upstream::UpstreamPool;

/// The next handler that sends a request to a peer of `pool`.
pub fn to_pool(pool: Arc<UpstreamPool>) -> Next {
    Arc::new(move |req| Box::pin(send(pool.clone(), req)))
}

/// `wasi:http/client` for guests: the authority of the request names the pool
/// (`http://POOL/path`); any other authority is refused (`destination-not-found`).
pub fn by_authority(pools: HashMap<String, Arc<UpstreamPool>>) -> Next {
    let pools = Arc::new(pools);
    Arc::new(move |req| {
        let pool = req.uri().host().and_then(|h| pools.get(h)).cloned();
        Box::pin(async move {
            match pool {
                Some(p) => send(p, req).await,
                None => Err(ErrorCode::DestinationNotFound),
            }
        })
    })
}

/// Sends `req` to a peer of `pool` and answers its response, body streamed.
async fn send(
    pool: Arc<UpstreamPool>,
    req: http::Request<WasiBody>,
) -> Result<http::Response<WasiBody>, ErrorCode> {
    if pool.def.tls.is_some() || pool.def.h2 {
        return Err(ErrorCode::InternalError(Some(
            "components reach cleartext HTTP/1.1 pools only".into(),
        )));
    }
    let addr = pool
        .select(b"", &[])
        .ok_or(ErrorCode::DestinationUnavailable)?;
    let mut sender = match idle::take(addr) {
        Some(s) => s,
        None => connect(&pool, addr).await?,
    };
    let (mut parts, body) = req.into_parts();
    // Origin-form on the wire, the pool's peer as the authority when the guest set none.
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if !parts.headers.contains_key(http::header::HOST) {
        let host = parts
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| addr.to_string());
        if let Ok(v) = http::HeaderValue::from_str(&host) {
            parts.headers.insert(http::header::HOST, v);
        }
    }
    parts.uri = path.parse().map_err(|_| ErrorCode::HttpRequestUriInvalid)?;
    parts.version = http::Version::HTTP_11;
    let res = sender
        .send_request(http::Request::from_parts(parts, body))
        .await
        .map_err(|e| {
            tracing::debug!(error = %e, "component upstream request failed");
            pool.failed(addr);
            ErrorCode::HttpProtocolError
        })?;
    pool.succeeded(addr);
    // Once this response's body is read, the connection may carry the next request.
    tokio::spawn(async move {
        if sender.ready().await.is_ok() {
            idle::put(addr, sender);
        }
    });
    Ok(res.map(incoming))
}

/// A new HTTP/1.1 connection to `addr`, driven by a task of its own.
async fn connect(pool: &UpstreamPool, addr: SocketAddr) -> Result<Sender, ErrorCode> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|_| {
        pool.failed(addr);
        ErrorCode::ConnectionRefused
    })?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) =
        hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(tcp))
            .await
            .map_err(|_| ErrorCode::ConnectionRefused)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "component upstream connection ended");
        }
    });
    Ok(sender)
}

/// A connection's request half.
type Sender = hyper::client::conn::http1::SendRequest<WasiBody>;

/// Idle keep-alive connections to pool peers, per peer address (at most [`idle::MAX`]
/// each), process-wide.
mod idle {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::{Mutex, OnceLock};

    use super::Sender;

    /// Idle connections kept per peer.
    pub(super) const MAX: usize = 64;

    fn map() -> &'static Mutex<HashMap<SocketAddr, Vec<Sender>>> {
        static IDLE: OnceLock<Mutex<HashMap<SocketAddr, Vec<Sender>>>> = OnceLock::new();
        IDLE.get_or_init(Default::default)
    }

    /// An idle connection to `addr` that is still open and ready.
    pub(super) fn take(addr: SocketAddr) -> Option<Sender> {
        let mut map = map().lock().unwrap_or_else(|e| e.into_inner());
        let list = map.get_mut(&addr)?;
        while let Some(s) = list.pop() {
            if s.is_ready() && !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    /// Keeps a ready connection for the next request to `addr`.
    pub(super) fn put(addr: SocketAddr, sender: Sender) {
        let mut map = map().lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(addr).or_default();
        if list.len() < MAX {
            list.push(sender);
        }
    }
}

/// A hyper response body as the body type `wasmtime-wasi-http` streams.
fn incoming(body: Incoming) -> WasiBody {
    body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync()
}
