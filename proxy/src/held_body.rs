//! Request bodies held for the filters (`request_body = "buffer"`): the whole body is
//! read before the upstream is contacted, so the origin sees nothing of a request
//! (line, headers or body) until the chain has decided, as nginx's request buffering
//! does for ModSecurity. A slow client costs no upstream connection.
//!
//! Handing a body read this early back to Pingora 0.9: once the request body is read,
//! pingora-proxy sends a body upstream only when its retry buffer (at most
//! `BODY_BUF_LIMIT`, 64 KiB, else truncated and dropped) holds something, or when the
//! body is empty; it then calls `request_body_filter` once with the buffer and
//! `end_of_stream`, and Sluice replaces the buffer with the whole filtered body there.
//! So the retry buffer is switched on only for the *last* 64 KiB or less of the body:
//! for a `Content-Length` body (HTTP/1.1 or HTTP/2) the remaining length is known, so
//! bodies of any size up to the limit work; a body of unknown length (chunked, or
//! HTTP/2 without `content-length`) is buffered from its start and works up to 64 KiB,
//! beyond which it is refused with 411 Length Required (upstream: cloudflare/pingora
//! PR #816 would lift this).

use crate::downstream::Downstream;
use pingora::prelude::*;
use pingora::ErrorType;

/// Pingora's retry buffer size (`BODY_BUF_LIMIT` in pingora-core 0.9).
pub const RETRY_BUFFER_LIMIT: usize = 64 * 1024;

/// What reading a held body gave.
#[derive(Debug)]
pub enum Held {
    /// The whole body; Pingora's retry buffer holds its tail (or it is empty).
    Body(Vec<u8>),
    /// The body (declared or read) exceeds the limit: answer 413.
    TooLarge,
    /// A body of unknown length over 64 KiB, which Pingora could not send on: 411.
    LengthRequired,
}

/// The declared length of the request body, when it is framed by `Content-Length`.
fn declared_length(req: &pingora::http::RequestHeader) -> Option<usize> {
    if req.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
}

/// Reads the whole request body, at most `max` bytes, before the upstream is
/// contacted. Read errors are the client's (`ErrorSource::Downstream`).
pub async fn read(session: &mut Downstream<'_>, max: usize) -> Result<Held> {
    let declared = declared_length(session.req_header());
    if declared.is_some_and(|n| n > max) {
        return Ok(Held::TooLarge);
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(max));
    let mut buffering = false;
    loop {
        // The tail that Pingora will hand back to `request_body_filter`.
        if !buffering && declared.is_none_or(|n| n.saturating_sub(body.len()) <= RETRY_BUFFER_LIMIT)
        {
            session.enable_retry_buffering();
            buffering = true;
        }
        match session
            .read_request_body()
            .await
            .map_err(|e| e.into_down())?
        {
            Some(chunk) => {
                if body.len() + chunk.len() > max {
                    return Ok(Held::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            None => break,
        }
    }
    if !body.is_empty() && session.retry_buffer().is_none() {
        if declared.is_none() {
            return Ok(Held::LengthRequired);
        }
        return Err(Error::explain(
            ErrorType::InternalError,
            "the held request body's tail missed Pingora's retry buffer",
        ));
    }
    Ok(Held::Body(body))
}
