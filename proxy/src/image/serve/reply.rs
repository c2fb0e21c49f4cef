//! What the client gets: the variant, the source passed through, or an error
//! answered as text; bodies sent in chunks within the send timeout.

use super::origin::HOP_BY_HOP;
use super::*;
use crate::downstream::Downstream;

/// How to answer: a HEAD request (no body), and the longest a client may take no bytes.
#[derive(Clone, Copy)]
pub(super) struct Reply {
    pub(super) head: bool,
    pub(super) idle: Duration,
}

/// Most bytes handed to the client in one write: each must be taken within
/// `send_timeout_ms` (nginx's `send_timeout`: time between two writes).
pub(super) const SEND_CHUNK: usize = 64 << 10;

/// Sends `body` in [`SEND_CHUNK`] slices (no copy), each within `idle`; a client that
/// takes none for that long is cut (counted) and its place freed.
pub(super) async fn send_body(
    session: &mut Downstream<'_>,
    body: Bytes,
    end: bool,
    idle: Duration,
) -> Result<()> {
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

pub(super) async fn send_variant(
    session: &mut Downstream<'_>,
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
pub(super) async fn on_error(
    session: &mut Downstream<'_>,
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
pub(super) async fn passthrough(
    session: &mut Downstream<'_>,
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
pub(super) async fn origin_status(session: &mut Downstream<'_>, status: u16) -> Result<()> {
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
pub(super) async fn busy(session: &mut Downstream<'_>) -> Result<()> {
    text_with(
        session,
        503,
        "too many image requests in flight",
        &[("retry-after", "1")],
    )
    .await
}

pub(super) async fn text(session: &mut Downstream<'_>, status: u16, msg: &str) -> Result<()> {
    text_with(session, status, msg, &[]).await
}

/// A short text answer of Sluice's own, never cached.
pub(super) async fn text_with(
    session: &mut Downstream<'_>,
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
