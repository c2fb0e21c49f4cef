//! Header conversion between Pingora's request and response heads and the maps
//! filters see, and the framing rules for what the filters changed.

use std::cell::RefCell;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;

use super::local::bad;
use crate::forward::h1::raw_head::{Name, RawHead};
use crate::forwarded::Added;
use crate::header_guard::HeaderRefusal;
use crate::host::HeaderMap;
use crate::snapshot::Snapshot;

/// The host routes match: `Host`, else the request target's authority (HTTP/2),
/// normalised (case, port, trailing dot).
pub(super) fn host_of(req: &RequestHeader) -> std::borrow::Cow<'_, str> {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.host())
        .unwrap_or("");
    crate::paths::normalize_host(raw)
}

/// The request headers as filters see them, pseudo-headers first; over HTTP/2 (no
/// `Host`), `:authority` comes from the request target, so filters see the same map
/// (empty when the request has neither). `added`: the request metadata Sluice writes
/// only on the way out ([`crate::forwarded::Added`]; `id` the request's id); filters
/// see it as if it were in the client's head, its fields last.
pub(super) fn request_map(
    req: &RequestHeader,
    tls: bool,
    added: Option<&Added>,
    id: &str,
) -> HeaderMap {
    let path = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = if let Some(h) = req.headers.get(http::header::HOST) {
        h.as_bytes()
    } else if let Some(a) = req.uri.authority() {
        a.as_str().as_bytes()
    } else {
        b""
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
        + 256;
    // Room for a few edits (they append) and the metadata without growing.
    let mut map = HeaderMap::with_capacity(11 + req.headers.len(), bytes);
    map.append_lowercase(":authority", authority);
    map.append_lowercase(":path", path.as_bytes());
    map.append_lowercase(":method", method.as_bytes());
    map.append_lowercase(":scheme", scheme);
    // As in Envoy, `Host` is `:authority` only.
    let replaced = |k: &http::HeaderName| added.is_some_and(|a| a.replaces(k));
    for (k, v) in req.headers.iter() {
        if *k != http::header::HOST && !replaced(k) {
            map.append_name(k, v.as_bytes());
        }
    }
    // Sluice's own names (`x-request-id`, `x-forwarded-*`), lowercase.
    for (k, v) in added.into_iter().flat_map(|a| a.fields(id)) {
        map.append_lowercase(k, v);
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
    map.append_lowercase(":status", resp.status.as_str().as_bytes());
    for (k, v) in resp.headers.iter() {
        map.append_name(k, v.as_bytes());
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

/// Is `name` a regular name (not a pseudo-header; in a request not `host` either)?
fn is_regular(name: &str, request: bool) -> bool {
    let pseudo = name.starts_with(':');
    let host = request && name == "host";
    !pseudo && !host
}

/// The regular entries of a filter map (not pseudo-headers; in a request map not
/// `host` either: it is `:authority`).
fn regular(map: &HeaderMap, request: bool) -> impl Iterator<Item = (&str, &[u8])> + Clone {
    map.iter().filter(move |(k, _)| is_regular(k, request))
}

/// The names whose values differ between the regular entries of `map` and `headers`
/// (Pingora's; a request's `Host` aside), each once, for a map a filter replaced whole: in the map's
/// order, then the names the map no longer has.
fn differing(map: &HeaderMap, headers: &http::HeaderMap, request: bool) -> Vec<String> {
    let ours: Vec<(&str, &[u8])> = regular(map, request).collect();
    let mut names: Vec<String> = Vec::new();
    for (i, (k, _)) in ours.iter().enumerate() {
        if ours[..i].iter().any(|(p, _)| p == k) {
            continue;
        }
        let want = ours.iter().filter(|(n, _)| n == k).map(|(_, v)| *v);
        let have = headers.get_all(*k).iter().map(|v| v.as_bytes());
        if !want.eq(have) {
            names.push(k.to_string());
        }
    }
    for k in headers.keys() {
        let kept = ours.iter().any(|(n, _)| *n == k.as_str());
        if is_regular(k.as_str(), request) && !kept {
            names.push(k.as_str().to_string());
        }
    }
    names
}

/// Names longer than this are not kept by [`with_shared_name`].
const NAME_CACHE_LEN: usize = 64;
/// How many names [`with_shared_name`] keeps per thread.
const NAME_CACHE_SIZE: usize = 32;

/// A name filters write back: its bytes for Pingora's case map, and the parsed name for
/// look-ups (`None` when it is not a valid header name: no head holds it then).
type SharedName = (Bytes, Option<http::HeaderName>);

thread_local! {
    /// The header names filters wrote back lately on this thread ([`with_shared_name`]).
    static NAMES: RefCell<Vec<SharedName>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `name` as shared bytes and parsed once: the names filters set are the
/// same request after request, so a thread keeps the last [`NAME_CACHE_SIZE`] of them,
/// and a write-back borrows them instead of allocating and parsing the name again.
fn with_shared_name<R>(name: &str, f: impl FnOnce(&Bytes, Option<&http::HeaderName>) -> R) -> R {
    let make = || {
        let b = Bytes::copy_from_slice(name.as_bytes());
        let h = http::HeaderName::from_bytes(name.as_bytes()).ok();
        (b, h)
    };
    if name.len() > NAME_CACHE_LEN {
        let (b, h) = make();
        return f(&b, h.as_ref());
    }
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        let i = match names
            .iter()
            .position(|(b, _)| b.as_ref() == name.as_bytes())
        {
            Some(i) => i,
            None => {
                if names.len() >= NAME_CACHE_SIZE {
                    names.remove(0);
                }
                names.push(make());
                names.len() - 1
            }
        };
        let (b, h) = &names[i];
        f(b, h.as_ref())
    })
}

/// Brings one name a filter changed in Pingora's head (through `headers`, `remove`
/// and `append`, the head's own so that its case map stays in step) in line with the
/// regular entries of `map`: left alone when its values are the same. `k` is lowercase
/// (a name of the map, of [`HeaderMap::edited`] or of the head).
fn sync_name<H>(
    map: &HeaderMap,
    request: bool,
    k: &str,
    head: &mut H,
    headers: fn(&H) -> &http::HeaderMap,
    remove: fn(&mut H, &http::HeaderName),
    append: fn(&mut H, Bytes, &[u8]) -> Result<()>,
) -> Result<()> {
    if !is_regular(k, request) {
        return Ok(());
    }
    let want = map.get_all_lowercase(k);
    with_shared_name(k, |bytes, name| {
        let had = match name {
            Some(n) => {
                let have = headers(head).get_all(n);
                if want.clone().eq(have.iter().map(|v| v.as_bytes())) {
                    return Ok(());
                }
                have.iter().next().is_some()
            }
            // Not a header name: no head holds it (the append below refuses it).
            None => false,
        };
        if let (true, Some(n)) = (had, name) {
            remove(head, n);
        }
        for v in want {
            append(head, bytes.clone(), v)?;
        }
        Ok(())
    })
}

/// Brings the names a filter changed in Pingora's head in line with the regular
/// entries of `map` ([`sync_name`]). Only edited names are compared
/// ([`HeaderMap::edited`]), and only those whose values differ are rewritten: a filter
/// that sets one header costs one removal and one append, not a rebuild of the head,
/// and the other names keep their case and place.
fn sync<H>(
    map: &HeaderMap,
    request: bool,
    head: &mut H,
    headers: fn(&H) -> &http::HeaderMap,
    remove: fn(&mut H, &http::HeaderName),
    append: fn(&mut H, Bytes, &[u8]) -> Result<()>,
) -> Result<()> {
    match map.edited() {
        Some(edited) => {
            for k in edited {
                sync_name(map, request, k, head, headers, remove, append)?;
            }
        }
        None => {
            for k in differing(map, headers(head), request) {
                sync_name(map, request, &k, head, headers, remove, append)?;
            }
        }
    }
    Ok(())
}

/// Brings the regular fields the filters edited in `map` into `req` (Pingora's head,
/// or the copy of it sent upstream): only names whose values differ are rewritten.
pub(super) fn apply_edits(map: &HeaderMap, req: &mut RequestHeader) -> Result<()> {
    sync(
        map,
        true,
        req,
        |r| &r.headers,
        |r, k| {
            r.remove_header(k);
        },
        |r, k, v| r.append_header(k, v).map(|_| ()),
    )
}

/// Fields whose value decides how Sluice frames, routes or answers the request, or
/// that never go upstream as they are: a filter's edit of one is written into the
/// client's head at once, never deferred ([`edits_deferrable`]).
fn read_by_sluice(name: &str) -> bool {
    matches!(
        name,
        "content-length" | "transfer-encoding" | "expect" | super::DEBUG_HEADER
    ) || crate::hop::is_hop_by_hop(name)
}

/// Whether a field value is one `http::HeaderValue` takes (what Pingora's head refuses
/// on a write-back): visible ASCII, space, tab and obs-text; no other control byte.
fn is_field_value(v: &[u8]) -> bool {
    v.iter().all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

/// Whether the regular fields the filters edited in `map` may stay out of the client's
/// head and be written only into the head sent upstream ([`edited_fields`], as
/// [`crate::forwarded::Added`] is): the map says which names were edited (it was not
/// replaced whole), none of them is a field Sluice itself reads or drops
/// ([`read_by_sluice`]), and each name and value is one the head would take, so that
/// deferring refuses nothing the write-back would have refused. A filter setting one
/// ordinary header then costs no insertion into Pingora's two maps (~2.5 k instructions
/// a field, issue #18).
pub(super) fn edits_deferrable(map: &HeaderMap) -> bool {
    let Some(mut edited) = map.edited() else {
        return false;
    };
    edited.all(|k| {
        !is_regular(k, true)
            || (!read_by_sluice(k)
                && with_shared_name(k, |_, name| name.is_some())
                && map.get_all_lowercase(k).all(is_field_value))
    })
}

/// The regular fields the filters edited, with their values in the map's order: what
/// the head sent upstream carries instead of the client's fields of those names
/// ([`is_edited`]) when the edits were deferred ([`edits_deferrable`]).
pub(super) fn edited_fields(map: &HeaderMap) -> impl Iterator<Item = (&str, &[u8])> {
    map.edited()
        .into_iter()
        .flatten()
        .filter(|k| is_regular(k, true))
        .flat_map(move |k| map.get_all_lowercase(k).map(move |v| (k, v)))
}

/// Whether a filter edited the field `name` of the request (a field of the client's
/// that deferred edits replace).
pub(super) fn is_edited(map: &HeaderMap, name: &http::HeaderName) -> bool {
    map.edited()
        .is_some_and(|mut e| e.any(|k| k == name.as_str()))
}

/// Writes what routes match from the filters' map into Pingora's request: `:method`,
/// `:path`, and `:authority` (or a `host` a filter set, the last of either) as `Host`.
/// Answers whether what routes match changed (`Host` or the target): when not, the
/// request still matches the route it matched.
pub(super) fn apply_target(map: &HeaderMap, req: &mut RequestHeader) -> Result<bool> {
    let (mut method, mut path, mut authority) = (None, None, None);
    for (k, v) in map.iter() {
        match k {
            ":method" => method = Some(v),
            ":path" => path = Some(v),
            ":authority" | "host" => authority = Some(v),
            _ => {}
        }
    }
    let mut retarget = false;
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
            retarget = true;
        }
    }
    let hosts = req.headers.get_all(http::header::HOST);
    match authority {
        Some(a) if hosts.iter().map(|h| h.as_bytes()).eq([a]) => {}
        Some(a) => {
            req.insert_header(http::header::HOST, a)?;
            retarget = true;
        }
        None => {
            retarget |= req.remove_header(&http::header::HOST).is_some();
        }
    }
    Ok(retarget)
}

/// Writes the filters' response headers back into Pingora's response (only what
/// they changed).
pub(super) fn apply_response(map: &HeaderMap, resp: &mut ResponseHeader) -> Result<()> {
    let status = map.get_all(":status").last();
    if let Some(v) = status.filter(|v| *v != resp.status.as_str().as_bytes()) {
        let code = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u16>().ok());
        resp.set_status(code.ok_or_else(|| bad("filter set a bad :status"))?)?;
    }
    sync(
        map,
        false,
        resp,
        |r| &r.headers,
        |r, k| {
            r.remove_header(k);
        },
        |r, k, v| r.append_header(k, v).map(|_| ()),
    )
}

/// Frames a response whose headers the filters rewrote. A filter that changes the
/// body length drops `content-length` (as on Envoy); on HTTP/1.1 the body is then sent
/// chunked, so the connection stays reusable (Pingora would send it close-delimited
/// while saying `Connection: keep-alive`). HTTP/2 frames bodies by itself; HTTP/1.0
/// clients get a close-delimited body (they cannot read chunked).
pub(crate) fn frame_response(req: &RequestHeader, resp: &mut ResponseHeader) -> Result<()> {
    let framed = resp.headers.contains_key(http::header::CONTENT_LENGTH)
        || resp.headers.contains_key(http::header::TRANSFER_ENCODING);
    if needs_chunked(req, resp.status, framed) {
        resp.insert_header(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        )?;
    }
    Ok(())
}

/// [`frame_response`] for a head kept as the bytes read: the same field, spelled as
/// Pingora's head writes it, after the origin's.
pub(crate) fn frame_raw_response(req: &RequestHeader, resp: &mut RawHead) {
    let framed = resp.contains(Name::ContentLength) || resp.contains(Name::TransferEncoding);
    if needs_chunked(req, resp.status, framed) {
        resp.append_chunked();
    }
}

/// Whether a response with `status` to `req`, `framed` by a length or a transfer
/// coding or not, is to be sent chunked.
fn needs_chunked(req: &RequestHeader, status: http::StatusCode, framed: bool) -> bool {
    let bodiless = req.method == http::Method::HEAD
        || status.is_informational()
        || matches!(status.as_u16(), 204 | 304);
    req.version == http::Version::HTTP_11 && !bodiless && !framed
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
