//! HTTP calls filters dispatch, sent with Pingora's connector (pooled upstream
//! connections) to the pools of the snapshot the filter belongs to.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use crate::fleet::FleetStore;
use crate::host::{CallResult, HeaderMap, HttpCallRequest, HttpCallResponse};
use crate::upstream::UpstreamPool;

/// Largest call response body a filter may receive.
pub const MAX_CALL_RESPONSE_BYTES: usize = 4 << 20;

/// The process's client connection pool for connections Sluice opens itself (filter
/// calls, image sources), apart from the proxied requests' own.
pub(crate) fn connector() -> &'static Connector {
    static C: OnceLock<Connector> = OnceLock::new();
    C.get_or_init(|| Connector::new(None))
}

/// The call client of one snapshot: its pools, by name.
pub struct PoolCallouts {
    /// Pools calls may go to.
    pub pools: HashMap<String, Arc<UpstreamPool>>,
    /// The fleet store (`[fleet]`), which runs the filters' `sluice.fleet.*` operations.
    pub fleet: Option<Arc<FleetStore>>,
}

impl crate::host::callout::Callouts for PoolCallouts {
    fn knows(&self, upstream: &str) -> bool {
        self.pools.contains_key(upstream)
    }

    fn fleet_enabled(&self) -> bool {
        self.fleet.is_some()
    }
    fn collection_refresh_ms(&self) -> Option<u64> {
        self.fleet.as_ref().map(|f| f.collections_refresh_ms())
    }

    fn call(&self, req: HttpCallRequest) -> Pin<Box<dyn Future<Output = CallResult> + Send>> {
        if let Some(op) = req.fleet {
            return match &self.fleet {
                Some(store) => Box::pin(store.clone().run(op)),
                None => Box::pin(async { Err("no fleet store".to_string()) }),
            };
        }
        let peer = self
            .pools
            .get(&req.upstream)
            .and_then(|p| p.select(b"", &[]).map(|a| p.peer(a)));
        Box::pin(async move {
            let peer = peer.ok_or_else(|| format!("pool {} has no peer", req.upstream))?;
            let timeout = req.timeout;
            match tokio::time::timeout(timeout, send(peer, req)).await {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
            }
        })
    }
}

async fn send(peer: HttpPeer, req: HttpCallRequest) -> CallResult {
    let get = |name: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let method = String::from_utf8(get(":method").unwrap_or_else(|| b"GET".to_vec()))
        .map_err(|e| e.to_string())?;
    let path = String::from_utf8(get(":path").unwrap_or_else(|| b"/".to_vec()))
        .map_err(|e| e.to_string())?;
    let mut header =
        RequestHeader::build(method.as_str(), path.as_bytes(), None).map_err(|e| e.to_string())?;
    let authority = get(":authority").unwrap_or_else(|| req.upstream.clone().into_bytes());
    header
        .insert_header(http::header::HOST, authority)
        .map_err(|e| e.to_string())?;
    for (k, v) in req.headers.iter().filter(|(k, _)| !k.starts_with(':')) {
        header
            .append_header(k.clone(), v.as_slice())
            .map_err(|e| e.to_string())?;
    }
    header
        .insert_header(http::header::CONTENT_LENGTH, req.body.len().to_string())
        .map_err(|e| e.to_string())?;
    let (mut session, _reused) = connector()
        .get_http_session(&peer)
        .await
        .map_err(|e| e.to_string())?;
    session
        .write_request_header(Box::new(header))
        .await
        .map_err(|e| e.to_string())?;
    if !req.body.is_empty() {
        session
            .write_request_body(Bytes::from(req.body), true)
            .await
            .map_err(|e| e.to_string())?;
    }
    session
        .finish_request_body()
        .await
        .map_err(|e| e.to_string())?;
    session
        .read_response_header()
        .await
        .map_err(|e| e.to_string())?;
    let resp = session.response_header().ok_or("no response header")?;
    let mut pairs = vec![(
        ":status".to_string(),
        resp.status.as_str().as_bytes().to_vec(),
    )];
    for (k, v) in resp.headers.iter() {
        pairs.push((k.as_str().to_string(), v.as_bytes().to_vec()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = session
        .read_response_body()
        .await
        .map_err(|e| e.to_string())?
    {
        if body.len() + chunk.len() > MAX_CALL_RESPONSE_BYTES {
            return Err("response body too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    connector()
        .release_http_session(session, &peer, Some(Duration::from_secs(60)))
        .await;
    Ok(HttpCallResponse {
        headers: HeaderMap::from_pairs(pairs),
        body,
        trailers: HeaderMap::default(),
    })
}
