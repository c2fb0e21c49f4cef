//! One image request, end to end: check the source path, take a place among the
//! requests in flight, fetch the source from the route's pool (revalidating a cached
//! variant), check its media type, transform on the blocking pool within the limits,
//! answer.

use crate::downstream::Downstream;
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

mod origin;
mod reply;

use origin::{header, open, origin_request, read_source, release, Read};
use reply::{busy, on_error, origin_status, send_variant, text, Reply};

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
    session: &mut Downstream<'_>,
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
