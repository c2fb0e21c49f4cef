//! One image request, end to end: check the source path, take a place among the
//! requests in flight, fetch the source from the route's pool (revalidating a cached
//! variant), check its media type, transform on the blocking pool within the limits,
//! answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession;
use sha2::{Digest, Sha256};
use tokio::time::timeout_at;

use super::cache::{ImageEngine, Variant};
use super::transform::{self, Output, TransformError, TransformLimits};
use super::{admit, source, Spec};
use crate::metrics::metrics;
use crate::policy::ImagesConfig;

use crate::callouts::connector;

/// Request headers not forwarded to the origin: hop-by-hop ones, and those about
/// the variant rather than the source (encodings, ranges, conditionals, Accept).
const NOT_FORWARDED: &[&str] = &[
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
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "proxy-connection", "upgrade"];

fn header<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A source read from the origin.
enum Read {
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
async fn read_source(
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

/// Why no output was made.
enum Failure {
    Transform(TransformError),
    Timeout,
    Overloaded,
}

/// Answers an image request: `raw_spec` is the filter's [`Spec`] JSON, `peer` the
/// upstream the proxy picked from the route's pool. Writes the whole response; the
/// caller ends the request (`request_filter` returns `Ok(true)`).
///
/// Memory: a request is served only with a place among `max_in_flight` (else a 503
/// at once), held until its last byte is handed to the client; the source is read
/// once into one buffer of at most `max_source_bytes` and dropped before the variant
/// is sent; a source passed through streams with backpressure; a client that takes
/// nothing for `send_timeout_ms` is cut.
pub async fn serve(
    session: &mut Session,
    cfg: &ImagesConfig,
    raw_spec: &[u8],
    peer: Box<HttpPeer>,
) -> Result<()> {
    let m = metrics();
    let spec = match Spec::parse(raw_spec) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "bad image transform spec");
            return text(session, 500, "bad image transform spec").await;
        }
    };
    if let Err(e) = source::check(&spec.source) {
        m.image_refused.with_label_values(&["source_path"]).inc();
        tracing::info!(source = %spec.source, reason = %e, "image source path refused");
        return text(session, 400, "bad image source path").await;
    }
    let Some(admitted) = admit::try_admit(cfg.max_in_flight) else {
        m.image_refused.with_label_values(&["busy"]).inc();
        return busy(session).await;
    };
    let engine = ImageEngine::get(cfg);
    let req = session.req_header();
    let head = req.method == http::Method::HEAD;
    let out = Reply {
        head,
        idle: Duration::from_millis(cfg.send_timeout_ms),
    };
    let host = header(&req.headers, "host").unwrap_or("");
    let key = format!("{host}\n{}", String::from_utf8_lossy(raw_spec));
    let cached = engine.lookup(&key);
    let origin_req = origin_request(req, &spec, cached.as_deref())?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(cfg.fetch_timeout_ms);

    let mut up = match timeout_at(deadline, open(&peer, origin_req)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, source = %spec.source, "image source fetch failed");
            m.image_transforms
                .with_label_values(&["origin_error"])
                .inc();
            return text(session, 502, "cannot fetch the image source").await;
        }
        Err(_) => {
            m.image_transforms
                .with_label_values(&["origin_error"])
                .inc();
            return text(session, 504, "image source timed out").await;
        }
    };
    let resp = match up.response_header() {
        Some(r) => r.clone(),
        None => return text(session, 502, "no response from the image source").await,
    };
    match (resp.status.as_u16(), &cached) {
        (304, Some(v)) => {
            m.image_cache.with_label_values(&["hit"]).inc();
            release(up, &peer).await;
            return send_variant(session, v, "hit", out).await;
        }
        (200, _) => {}
        (status, _) => {
            // Not the origin's body: what an unguarded path answers stays there.
            up.shutdown().await;
            m.image_transforms
                .with_label_values(&["origin_status"])
                .inc();
            return origin_status(session, status).await;
        }
    }
    if !source::content_type_allowed(header(&resp.headers, "content-type"), &spec.content_types) {
        up.shutdown().await;
        m.image_refused.with_label_values(&["content_type"]).inc();
        tracing::info!(
            source = %spec.source,
            content_type = header(&resp.headers, "content-type").unwrap_or(""),
            "image source refused: content type not allowed"
        );
        return text(
            session,
            415,
            "the image source is not an allowed image type",
        )
        .await;
    }

    let declared = header(&resp.headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    let body = match read_source(&mut up, declared, cfg.max_source_bytes, deadline).await {
        Read::Whole(b) => b,
        Read::Over(partial) => {
            m.image_transforms
                .with_label_values(&["source_too_large"])
                .inc();
            // `admitted` lives until the pass-through ends.
            return on_error(
                session,
                &spec,
                Some(&mut up),
                &resp,
                partial,
                "the image source is over max_source_bytes",
                out,
            )
            .await;
        }
        Read::Failed(status, msg) => {
            m.image_transforms
                .with_label_values(&["origin_error"])
                .inc();
            return text(session, status, msg).await;
        }
    };
    release(up, &peer).await;
    m.image_bytes
        .with_label_values(&["source"])
        .inc_by(body.len() as u64);

    let source_etag = header(&resp.headers, "etag").map(str::to_string);
    let last_modified = header(&resp.headers, "last-modified").map(str::to_string);
    let validator = source_etag
        .clone()
        .or_else(|| last_modified.clone())
        .unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(&body))));
    if let Some(v) = cached.as_ref().filter(|v| v.validator == validator) {
        m.image_cache.with_label_values(&["hit"]).inc();
        drop(body);
        return send_variant(session, v, "hit", out).await;
    }
    if engine.caches() {
        m.image_cache.with_label_values(&["miss"]).inc();
    }

    let started = Instant::now();
    let made = match run(&engine, cfg, body.clone(), spec.clone()).await {
        Ok(made) => made,
        Err(f) => {
            let (label, msg, status) = match &f {
                Failure::Transform(e) => (e.label(), e.to_string(), spec.on_error),
                Failure::Timeout => ("timeout", "image transform timed out".into(), 503),
                Failure::Overloaded => ("overloaded", "image transforms are busy".into(), 503),
            };
            m.image_transforms.with_label_values(&[label]).inc();
            tracing::info!(source = %spec.source, outcome = label, reason = %msg, "image not transformed");
            let mut spec = spec;
            if spec.on_error != 0 {
                spec.on_error = status;
            }
            return on_error(session, &spec, None, &resp, body, &msg, out).await;
        }
    };
    // The source is no longer needed: only the variant stays while the client reads.
    drop(body);
    m.image_transforms.with_label_values(&["ok"]).inc();
    m.image_duration
        .with_label_values(&[made.format.name()])
        .observe(started.elapsed().as_secs_f64());
    m.image_bytes
        .with_label_values(&["output"])
        .inc_by(made.bytes.len() as u64);

    let cache_control = header(&resp.headers, "cache-control").map(str::to_string);
    let cacheable = !cache_control.as_deref().is_some_and(|c| {
        let c = c.to_ascii_lowercase();
        c.contains("no-store") || c.contains("private")
    });
    let etag = format!(
        "\"img-{}\"",
        &hex::encode(Sha256::digest(
            [validator.as_bytes(), b"\n", raw_spec].concat()
        ))[..24]
    );
    let variant = Arc::new(Variant {
        validator,
        source_etag,
        last_modified,
        cache_control,
        expires: header(&resp.headers, "expires").map(str::to_string),
        etag,
        content_type: made.format.content_type(),
        vary_accept: spec.vary_accept,
        body: Bytes::from(made.bytes),
    });
    if cacheable {
        engine.store(key, variant.clone());
    }
    let sent = send_variant(session, &variant, "miss", out).await;
    drop(admitted);
    sent
}

/// How to answer: a HEAD request (no body), and the longest a client may take no bytes.
#[derive(Clone, Copy)]
struct Reply {
    head: bool,
    idle: Duration,
}

/// Most bytes handed to the client in one write: each must be taken within
/// `send_timeout_ms` (nginx's `send_timeout`: time between two writes).
const SEND_CHUNK: usize = 64 << 10;

/// Sends `body` in [`SEND_CHUNK`] slices (no copy), each within `idle`; a client that
/// takes none for that long is cut (counted) and its place freed.
async fn send_body(session: &mut Session, body: Bytes, end: bool, idle: Duration) -> Result<()> {
    let mut rest = body;
    loop {
        let n = rest.len().min(SEND_CHUNK);
        let piece = rest.split_to(n);
        let last = rest.is_empty();
        match tokio::time::timeout(idle, session.write_response_body(Some(piece), end && last))
            .await
        {
            Ok(r) => r?,
            Err(_) => {
                metrics()
                    .image_refused
                    .with_label_values(&["send_timeout"])
                    .inc();
                return Err(Error::explain(
                    ErrorType::WriteTimedout,
                    "image response: the client took nothing within send_timeout_ms",
                ));
            }
        }
        if last {
            return Ok(());
        }
    }
}

/// Runs the transform on the blocking pool, in a slot, within `timeout_ms`.
async fn run(
    engine: &ImageEngine,
    cfg: &ImagesConfig,
    src: Bytes,
    spec: Spec,
) -> std::result::Result<Output, Failure> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(cfg.timeout_ms);
    let permit = match timeout_at(deadline, engine.slots.clone().acquire_owned()).await {
        Ok(Ok(p)) => p,
        _ => return Err(Failure::Overloaded),
    };
    let limits = TransformLimits {
        max_source_pixels: cfg.max_source_pixels,
        max_output_pixels: cfg.max_output_pixels,
    };
    // The slot stays taken until the work ends, even when the request gave up on it.
    let job = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        transform::transform(&src, &spec, &limits)
    });
    match timeout_at(deadline, job).await {
        Err(_) => Err(Failure::Timeout),
        Ok(Err(_)) => Err(Failure::Transform(TransformError::Panic)),
        Ok(Ok(r)) => r.map_err(Failure::Transform),
    }
}

fn origin_request(
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

async fn open(peer: &HttpPeer, req: RequestHeader) -> Result<HttpSession> {
    let (mut s, _reused) = connector().get_http_session(peer).await?;
    s.write_request_header(Box::new(req)).await?;
    s.finish_request_body().await?;
    s.read_response_header().await?;
    Ok(s)
}

/// Returns a finished upstream connection to the pool.
async fn release(mut up: HttpSession, peer: &HttpPeer) {
    if up.response_done() {
        connector()
            .release_http_session(up, peer, Some(Duration::from_secs(60)))
            .await;
    } else {
        up.shutdown().await;
    }
}

async fn send_variant(
    session: &mut Session,
    v: &Variant,
    result: &'static str,
    out: Reply,
) -> Result<()> {
    let Reply { head, idle } = out;
    let not_modified = header(&session.req_header().headers, "if-none-match").is_some_and(|inm| {
        inm.split(',')
            .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == v.etag)
    });
    let status = if not_modified { 304 } else { 200 };
    let mut h = ResponseHeader::build(status, Some(10))?;
    h.insert_header("content-type", v.content_type)?;
    if !not_modified {
        h.insert_header("content-length", v.body.len().to_string())?;
    }
    h.insert_header("etag", v.etag.as_str())?;
    if let Some(x) = &v.last_modified {
        h.insert_header("last-modified", x.as_str())?;
    }
    if let Some(x) = &v.cache_control {
        h.insert_header("cache-control", x.as_str())?;
    }
    if let Some(x) = &v.expires {
        h.insert_header("expires", x.as_str())?;
    }
    if v.vary_accept {
        h.insert_header("vary", "Accept")?;
    }
    h.insert_header("x-sluice-image", result)?;
    let no_body = head || not_modified;
    session.write_response_header(Box::new(h), no_body).await?;
    if !no_body {
        send_body(session, v.body.clone(), true, idle).await?;
    }
    Ok(())
}

/// A source that is not transformed: the original, or the configured status.
async fn on_error(
    session: &mut Session,
    spec: &Spec,
    up: Option<&mut HttpSession>,
    resp: &ResponseHeader,
    body: Bytes,
    msg: &str,
    out: Reply,
) -> Result<()> {
    if spec.on_error == 0 {
        passthrough(session, up, resp, body, out).await
    } else {
        if let Some(up) = up {
            up.shutdown().await;
        }
        text(session, spec.on_error, msg).await
    }
}

/// Sends the origin's (allowed, 200) response as it is: its header, the body read so
/// far, then the rest of it chunk by chunk, each read only once the client took the
/// one before (backpressure: nothing more is buffered).
async fn passthrough(
    session: &mut Session,
    up: Option<&mut HttpSession>,
    resp: &ResponseHeader,
    body: Bytes,
    out: Reply,
) -> Result<()> {
    let Reply { head, idle } = out;
    let mut h = resp.clone();
    for n in HOP_BY_HOP {
        h.remove_header(*n);
    }
    h.insert_header("x-sluice-image", "passthrough")?;
    let no_body = head || matches!(resp.status.as_u16(), 204 | 304);
    session.write_response_header(Box::new(h), no_body).await?;
    if no_body {
        if let Some(up) = up {
            up.shutdown().await;
        }
        return Ok(());
    }
    if !body.is_empty() {
        send_body(session, body, false, idle).await?;
    }
    if let Some(up) = up {
        loop {
            let chunk = match tokio::time::timeout(idle, up.read_response_body()).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(Error::explain(
                        ErrorType::ReadTimedout,
                        "image source: nothing read within send_timeout_ms",
                    ))
                }
            };
            match chunk {
                Some(c) => send_body(session, c, false, idle).await?,
                None => break,
            }
        }
    }
    session.write_response_body(None, true).await
}

/// A non-200 answer of the origin: its status, Sluice's body (not the origin's).
async fn origin_status(session: &mut Session, status: u16) -> Result<()> {
    if matches!(status, 204 | 304) {
        let mut h = ResponseHeader::build(status, Some(2))?;
        h.insert_header("x-sluice-image", "error")?;
        return session.write_response_header(Box::new(h), true).await;
    }
    text(
        session,
        status,
        &format!("the image source answered {status}"),
    )
    .await
}

/// 503 at once: `max_in_flight` image requests are in flight.
async fn busy(session: &mut Session) -> Result<()> {
    text_with(
        session,
        503,
        "too many image requests in flight",
        &[("retry-after", "1")],
    )
    .await
}

async fn text(session: &mut Session, status: u16, msg: &str) -> Result<()> {
    text_with(session, status, msg, &[]).await
}

/// A short text answer of Sluice's own, never cached.
async fn text_with(
    session: &mut Session,
    status: u16,
    msg: &str,
    extra: &[(&'static str, &str)],
) -> Result<()> {
    let body = format!("{msg}\n");
    let mut h = ResponseHeader::build(status, Some(4 + extra.len()))?;
    h.insert_header("content-type", "text/plain")?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", "no-store")?;
    h.insert_header("x-sluice-image", "error")?;
    for (k, v) in extra {
        h.insert_header(*k, *v)?;
    }
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(h), head).await?;
    if head {
        return Ok(());
    }
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}
