//! Header conversion between Pingora's request and response heads and the maps
//! filters see, and the framing rules for what the filters changed.

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;

use super::local::bad;
use crate::header_guard::HeaderRefusal;
use crate::host::HeaderMap;
use crate::snapshot::Snapshot;

/// The host routes match: `Host`, else the request target's authority (HTTP/2),
/// normalised (case, port, trailing dot).
pub(super) fn host_of(req: &RequestHeader) -> String {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.host())
        .unwrap_or("");
    crate::paths::normalize_host(raw)
}

/// The request headers as filters see them, pseudo-headers first; over HTTP/2 (no
/// `Host`), `:authority` comes from the request target, so filters see the same map.
pub(super) fn request_map(req: &RequestHeader, host: &str, tls: bool) -> HeaderMap {
    let path = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = if let Some(h) = req.headers.get(http::header::HOST) {
        h.as_bytes()
    } else if let Some(a) = req.uri.authority() {
        a.as_str().as_bytes()
    } else {
        host.as_bytes()
    };
    let scheme: &[u8] = if tls { b"https" } else { b"http" };
    let method = req.method.as_str();
    let bytes = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum::<usize>()
        + path.len()
        + method.len()
        + 64;
    let mut map = HeaderMap::with_capacity(4 + req.headers.len(), bytes);
    map.append(":authority", authority);
    map.append(":path", path.as_bytes());
    map.append(":method", method.as_bytes());
    map.append(":scheme", scheme);
    // As in Envoy, `Host` is `:authority` only.
    for (k, v) in req.headers.iter().filter(|(k, _)| *k != http::header::HOST) {
        map.append(k.as_str(), v.as_bytes());
    }
    map
}

pub(super) fn response_map(resp: &ResponseHeader) -> HeaderMap {
    let bytes = resp
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum::<usize>()
        + 16;
    let mut map = HeaderMap::with_capacity(1 + resp.headers.len(), bytes);
    map.append(":status", resp.status.as_str().as_bytes());
    for (k, v) in resp.headers.iter() {
        map.append(k.as_str(), v.as_bytes());
    }
    map
}

/// The policy's header rules ([`crate::header_guard`]) over a request, before any
/// filter sees it.
pub(super) fn check_request_headers(
    snap: &Snapshot,
    req: &RequestHeader,
    filtered: bool,
) -> std::result::Result<(), HeaderRefusal> {
    let target = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    snap.policy.headers.check_request(
        req.method.as_str(),
        target,
        req.headers
            .iter()
            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
        filtered,
    )
}

/// Writes the filters' request headers back into Pingora's request.
pub(super) fn apply_request(map: &HeaderMap, req: &mut RequestHeader) -> Result<()> {
    let names: Vec<_> = req.headers.keys().cloned().collect();
    for n in names {
        req.remove_header(&n);
    }
    for (k, v) in map.iter() {
        match k {
            ":method" => req.set_method(
                http::Method::from_bytes(v).map_err(|_| bad("filter set a bad :method"))?,
            ),
            ":path" => {
                req.set_uri(http::Uri::try_from(v).map_err(|_| bad("filter set a bad :path"))?)
            }
            ":authority" => req.insert_header(http::header::HOST, v)?,
            k if k.starts_with(':') => {}
            k => {
                req.append_header(k.to_string(), v)?;
            }
        }
    }
    Ok(())
}

/// Writes the filters' response headers back into Pingora's response.
pub(super) fn apply_response(map: &HeaderMap, resp: &mut ResponseHeader) -> Result<()> {
    let names: Vec<_> = resp.headers.keys().cloned().collect();
    for n in names {
        resp.remove_header(&n);
    }
    for (k, v) in map.iter() {
        match k {
            ":status" => {
                let code = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok());
                resp.set_status(code.ok_or_else(|| bad("filter set a bad :status"))?)?;
            }
            k if k.starts_with(':') => {}
            k => {
                resp.append_header(k.to_string(), v)?;
            }
        }
    }
    Ok(())
}

/// Frames a response whose headers the filters rewrote. A filter that changes the
/// body length drops `content-length` (as on Envoy); on HTTP/1.1 the body is then sent
/// chunked, so the connection stays reusable (Pingora would send it close-delimited
/// while saying `Connection: keep-alive`). HTTP/2 frames bodies by itself; HTTP/1.0
/// clients get a close-delimited body (they cannot read chunked).
pub(crate) fn frame_response(req: &RequestHeader, resp: &mut ResponseHeader) -> Result<()> {
    let bodiless = req.method == http::Method::HEAD
        || resp.status.is_informational()
        || matches!(resp.status.as_u16(), 204 | 304);
    if req.version != http::Version::HTTP_11
        || bodiless
        || resp.headers.contains_key(http::header::CONTENT_LENGTH)
        || resp.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        return Ok(());
    }
    resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    Ok(())
}

/// The `content-length` a response declares, if one.
pub(super) fn declared_length(resp: &ResponseHeader) -> Option<u64> {
    if resp.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    resp.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}
