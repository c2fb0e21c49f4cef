//! The way back to the client, one implementation for every route kind: a response head
//! through the Proxy-Wasm response-headers phase (`response_filter`), then its body chunk
//! by chunk through the response-body phase (`response_body_filter`) and on to the
//! client. A pool's response ([`Source::Upstream`]) and a component chain's
//! ([`Source::Component`]) take the same path, so a filter's response rules (a WAF's
//! phases 3 and 4) see both.
//!
//! Nothing of a response reaches the client before the response-headers phase has run;
//! a filter that pauses the head keeps it back until the body flows on, or replaces the
//! whole response with a local answer ([`crate::proxy::Ctx::take_late_head`]).

use crate::downstream::Downstream;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::ErrorType;

use super::h1::response_head::ResponseHead;
use super::upstream::Upstream;
use crate::host::component::WasiBody;
use crate::proxy::{Ctx, Sluice};

/// Longest a component chain may leave its response body without a new chunk (a body
/// that never ends and never moves is cut, as a pool's read timeout cuts a silent peer).
pub const COMPONENT_BODY_IDLE: Duration = Duration::from_secs(60);

/// Where a response body comes from.
pub enum Source<'a> {
    /// A pool peer's connection, its head already read.
    Upstream(&'a mut Upstream),
    /// A component chain's response body.
    Component(&'a mut WasiBody),
}

impl Source<'_> {
    /// The next non-empty chunk, or `None` at the end of the body.
    async fn next(&mut self) -> Result<Option<Bytes>> {
        match self {
            Source::Upstream(client) => client.read_response_body().await.map_err(up),
            Source::Component(body) => loop {
                let frame = tokio::time::timeout(COMPONENT_BODY_IDLE, body.frame())
                    .await
                    .map_err(|_| {
                        Error::explain(ErrorType::ReadTimedout, "component response body idle")
                            .into_up()
                    })?;
                let Some(frame) = frame else { return Ok(None) };
                let frame = frame.map_err(|e| {
                    Error::explain(
                        ErrorType::ReadError,
                        format!("component response body: {e}"),
                    )
                    .into_up()
                })?;
                // Trailers are not forwarded; empty frames carry nothing.
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        return Ok(Some(data));
                    }
                }
            },
        }
    }

    /// Whether the body is known to be complete.
    fn done(&mut self) -> bool {
        match self {
            Source::Upstream(client) => client.response_done(),
            Source::Component(body) => http_body::Body::is_end_stream(&**body),
        }
    }

    /// Whether the rest of the body may be left unread once a filter replaced it (a
    /// pool's connection is reused only after its body was read; a component's body is
    /// dropped, which ends the guest's stream).
    fn may_drop(&self) -> bool {
        matches!(self, Source::Component(_))
    }
}

/// Runs `head` through the response phases of `ctx`'s chain and sends it, with its
/// body from `source`, to the client. A head kept as the origin's bytes (read so when
/// no filter reads it: [`Sluice::response_untouched`]) is framed and written as it is
/// (one with an obs-fold is never read so: [`super::h1::response_head::read`]).
pub async fn relay(
    s: &Sluice,
    session: &mut Downstream<'_>,
    ctx: &mut Ctx,
    head: ResponseHead,
    mut source: Source<'_>,
) -> Result<()> {
    let (bodiless, mut held) = match head {
        ResponseHead::Raw(mut raw) => {
            s.upstream_answered(raw.status, ctx);
            let bodiless = is_bodiless(session, raw.status);
            if !bodiless {
                crate::proxy::frame_raw_response(session.req_header(), &mut raw);
            }
            session.write_raw_head(raw, false).await.map_err(down)?;
            (bodiless, None)
        }
        ResponseHead::Built(resp) => head_through_chain(s, session, ctx, resp).await?,
    };
    if bodiless {
        let mut none = None;
        s.response_body_filter(session, &mut none, true, ctx)?;
        session
            .write_response_body(None, true)
            .await
            .map_err(down)?;
        return Ok(());
    }
    loop {
        let chunk = if source.may_drop() && ctx.response_replaced() {
            None
        } else {
            source.next().await?
        };
        let end = chunk.is_none() || source.done();
        let mut body = chunk;
        s.response_body_filter(session, &mut body, end, ctx)?;
        if let Some(late) = ctx.take_late_head() {
            // Answered locally while the head was held: nothing of the upstream's
            // response was sent; the connection is not reused (its body is unread).
            session
                .write_response_header(late, false)
                .await
                .map_err(down)?;
            session
                .write_response_body(body, true)
                .await
                .map_err(down)?;
            return Ok(());
        }
        if end || body.as_ref().is_some_and(|b| !b.is_empty()) {
            if let Some(head) = held.take() {
                ctx.defer_head(false);
                session
                    .write_response_header(head, false)
                    .await
                    .map_err(down)?;
            }
        }
        if end {
            session
                .write_response_body(body, true)
                .await
                .map_err(down)?;
            return Ok(());
        }
        if let Some(data) = body.filter(|b| !b.is_empty()) {
            // A task write flushes: a streamed response reaches the client as it comes.
            session.write_body_flushed(data).await.map_err(down)?;
        }
    }
}

/// Whether the response to `session`'s request with `status` has no body.
fn is_bodiless(session: &Downstream<'_>, status: http::StatusCode) -> bool {
    session.req_header().method == http::Method::HEAD || matches!(status.as_u16(), 204 | 304)
}

/// Runs a built head through the response-headers phase and frames it, then writes it,
/// or holds it when a filter paused it with a body to follow. Returns whether the
/// response has no body, and the head held.
async fn head_through_chain(
    s: &Sluice,
    session: &mut Downstream<'_>,
    ctx: &mut Ctx,
    mut resp: Box<ResponseHeader>,
) -> Result<(bool, Option<Box<ResponseHeader>>)> {
    s.response_filter(session, &mut resp, ctx).await?;
    resp.set_version(http::Version::HTTP_11);
    let bodiless = is_bodiless(session, resp.status);
    if !bodiless {
        crate::proxy::frame_response(session.req_header(), &mut resp)?;
    }
    // A filter that paused the response headers with a body to follow holds the head
    // until the body flows on from the chain (or a local answer replaces it).
    if !bodiless && ctx.response_head_held() {
        ctx.defer_head(true);
        return Ok((bodiless, Some(resp)));
    }
    session
        .write_response_header(resp, false)
        .await
        .map_err(down)?;
    Ok((bodiless, None))
}

/// An error of the upstream side.
pub(super) fn up(mut e: Box<Error>) -> Box<Error> {
    e.as_up();
    e
}

/// An error of the client side.
pub(super) fn down(mut e: Box<Error>) -> Box<Error> {
    e.as_down();
    e
}
