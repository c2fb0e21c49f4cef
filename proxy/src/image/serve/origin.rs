//! The source request to the origin: headers forwarded, the connection opened and
//! released, the body read within its limits.

use super::*;

/// Request headers not forwarded to the origin: hop-by-hop ones, and those about
/// the variant rather than the source (encodings, ranges, conditionals, Accept).
pub(super) const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "accept",
    "accept-encoding",
    "range",
    "if-range",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "content-length",
    "expect",
];

/// Response headers of the origin not passed on.
pub(super) const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "proxy-connection", "upgrade"];

pub(super) fn header<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A source read from the origin.
pub(super) enum Read {
    /// All of it, within `max_source_bytes`.
    Whole(Bytes),
    /// Over `max_source_bytes` (by `Content-Length`, or while reading): what was read.
    Over(Bytes),
    /// The origin failed: status and message for the client.
    Failed(u16, &'static str),
}

/// Reads the source once into one buffer: sized by `Content-Length` when it is
/// within `limit` (refused before reading when over), else grown as chunks come and
/// never past `limit` plus one chunk.
pub(super) async fn read_source(
    up: &mut HttpSession,
    declared: Option<u64>,
    limit: u64,
    deadline: tokio::time::Instant,
) -> Read {
    if declared.is_some_and(|n| n > limit) {
        return Read::Over(Bytes::new());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    loop {
        match timeout_at(deadline, up.read_response_body()).await {
            Ok(Ok(Some(chunk))) => {
                let need = body.len() + chunk.len();
                if need > body.capacity() {
                    let cap = (body.capacity() * 2)
                        .max(need)
                        .max(64 << 10)
                        .min(limit.max(need));
                    body.reserve_exact(cap - body.len());
                }
                body.extend_from_slice(&chunk);
                if body.len() > limit {
                    return Read::Over(Bytes::from(body));
                }
            }
            Ok(Ok(None)) => return Read::Whole(Bytes::from(body)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading the image source failed");
                return Read::Failed(502, "cannot read the image source");
            }
            Err(_) => return Read::Failed(504, "image source timed out"),
        }
    }
}

pub(super) fn origin_request(
    req: &RequestHeader,
    spec: &Spec,
    cached: Option<&Variant>,
) -> Result<RequestHeader> {
    let mut out = RequestHeader::build("GET", spec.source.as_bytes(), None)?;
    for (k, v) in req.headers.iter() {
        if !NOT_FORWARDED.contains(&k.as_str()) {
            out.append_header(k.clone(), v.clone())?;
        }
    }
    out.insert_header("accept", "image/*,*/*;q=0.8")?;
    if let Some(v) = cached {
        if let Some(e) = &v.source_etag {
            out.insert_header("if-none-match", e.as_str())?;
        } else if let Some(lm) = &v.last_modified {
            out.insert_header("if-modified-since", lm.as_str())?;
        }
    }
    Ok(out)
}

pub(super) async fn open(peer: &HttpPeer, req: RequestHeader) -> Result<HttpSession> {
    let (mut s, _reused) = connector().get_http_session(peer).await?;
    s.write_request_header(Box::new(req)).await?;
    s.finish_request_body().await?;
    s.read_response_header().await?;
    Ok(s)
}

/// Returns a finished upstream connection to the pool.
pub(super) async fn release(mut up: HttpSession, peer: &HttpPeer) {
    if up.response_done() {
        connector()
            .release_http_session(up, peer, Some(Duration::from_secs(60)))
            .await;
    } else {
        up.shutdown().await;
    }
}
