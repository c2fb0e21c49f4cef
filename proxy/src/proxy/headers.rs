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
        + 128;
    // Room for a few edits (they append) without growing.
    let mut map = HeaderMap::with_capacity(8 + req.headers.len(), bytes);
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
        + 128;
    // Room for a few edits (they append) without growing.
    let mut map = HeaderMap::with_capacity(5 + resp.headers.len(), bytes);
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

/// The regular (not pseudo) entries of a filter map.
fn regular(map: &HeaderMap) -> impl Iterator<Item = (&str, &[u8])> + Clone {
    map.iter().filter(|(k, _)| !k.starts_with(':'))
}

/// What to change in `headers` (Pingora's; `Host` aside: it is `:authority`) to bring
/// it in line with the regular entries of `map`: the names the filters removed, and the
/// names whose values they changed (replaced whole, in the map's order). `None` when
/// nothing changed. A filter that edits one header costs one removal and one append,
/// not a rebuild of the head, whose other names keep their case and place.
fn changes<'m>(
    map: &'m HeaderMap,
    headers: &http::HeaderMap,
) -> Option<(Vec<http::HeaderName>, Vec<&'m str>)> {
    let theirs = headers.iter().filter(|(k, _)| *k != http::header::HOST);
    let same = regular(map)
        .map(|(k, v)| (k.as_bytes(), v))
        .eq(theirs.map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())));
    if same {
        return None;
    }
    let mut edits: Vec<&str> = Vec::new();
    for (i, (k, _)) in regular(map).enumerate() {
        if regular(map).take(i).any(|(p, _)| p == k) {
            continue;
        }
        let want = regular(map).filter(|(n, _)| *n == k).map(|(_, v)| v);
        let have = headers.get_all(k).iter().map(|v| v.as_bytes());
        if !want.eq(have) {
            edits.push(k);
        }
    }
    let gone = headers
        .keys()
        .filter(|k| **k != http::header::HOST && !regular(map).any(|(n, _)| n == k.as_str()))
        .cloned()
        .collect();
    Some((gone, edits))
}

/// The values of `name` in `map`.
fn values_of<'m>(map: &'m HeaderMap, name: &'m str) -> impl Iterator<Item = &'m [u8]> + 'm {
    regular(map)
        .filter(move |(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Writes the filters' request headers back into Pingora's request (only what they
/// changed).
pub(super) fn apply_request(map: &HeaderMap, req: &mut RequestHeader) -> Result<()> {
    let (mut method, mut path, mut authority) = (None, None, None);
    for (k, v) in map.iter().filter(|(k, _)| k.starts_with(':')) {
        match k {
            ":method" => method = Some(v),
            ":path" => path = Some(v),
            ":authority" => authority = Some(v),
            _ => {}
        }
    }
    if let Some(v) = method.filter(|v| *v != req.method.as_str().as_bytes()) {
        req.set_method(http::Method::from_bytes(v).map_err(|_| bad("filter set a bad :method"))?);
    }
    if let Some(v) = path {
        // An absolute-form target is rewritten to `:path` (origin-form) as before.
        let same = req.uri.scheme().is_none()
            && req.uri.authority().is_none()
            && req.uri.path_and_query().map(|p| p.as_str().as_bytes()) == Some(v);
        if !same {
            req.set_uri(http::Uri::try_from(v).map_err(|_| bad("filter set a bad :path"))?);
        }
    }
    let hosts = req.headers.get_all(http::header::HOST);
    match authority {
        Some(a) if hosts.iter().map(|h| h.as_bytes()).eq([a]) => {}
        Some(a) => req.insert_header(http::header::HOST, a)?,
        None => {
            req.remove_header(&http::header::HOST);
        }
    }
    if let Some((gone, edits)) = changes(map, &req.headers) {
        for k in gone {
            req.remove_header(&k);
        }
        for k in edits {
            req.remove_header(k);
            for v in values_of(map, k) {
                req.append_header(k.to_string(), v)?;
            }
        }
    }
    Ok(())
}

/// Writes the filters' response headers back into Pingora's response (only what
/// they changed).
pub(super) fn apply_response(map: &HeaderMap, resp: &mut ResponseHeader) -> Result<()> {
    let status = map
        .iter()
        .filter(|(k, _)| *k == ":status")
        .last()
        .map(|(_, v)| v);
    if let Some(v) = status.filter(|v| *v != resp.status.as_str().as_bytes()) {
        let code = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u16>().ok());
        resp.set_status(code.ok_or_else(|| bad("filter set a bad :status"))?)?;
    }
    if let Some((gone, edits)) = changes(map, &resp.headers) {
        for k in gone {
            resp.remove_header(&k);
        }
        for k in edits {
            resp.remove_header(k);
            for v in values_of(map, k) {
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
pub(super) fn frame_response(req: &RequestHeader, resp: &mut ResponseHeader) -> Result<()> {
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
