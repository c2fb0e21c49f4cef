//! The way out of a component chain: a route's pool (the last middleware's next handler)
//! and the policy's pools by name (every guest's `wasi:http/client`). HTTP/1.1 over
//! cleartext TCP with hyper, bodies streamed both ways; a guest never reaches the network
//! by itself.

use std::collections::HashMap;
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
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|_| {
        pool.failed(addr);
        ErrorCode::ConnectionRefused
    })?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(tcp))
            .await
            .map_err(|_| ErrorCode::ConnectionRefused)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "component upstream connection ended");
        }
    });
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
    Ok(res.map(incoming))
}

/// A hyper response body as the body type `wasmtime-wasi-http` streams.
fn incoming(body: Incoming) -> WasiBody {
    body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync()
}
