//! A component route's exchange on Pingora's session: the request head and body go into
//! the component chain (the body streamed through the Proxy-Wasm request-body phase, or
//! the one the Proxy-Wasm filters already hold), and the chain's response comes back
//! through the Proxy-Wasm response phases ([`crate::forward::relay`]), as a pool's does.

use crate::downstream::Downstream;
use std::pin::pin;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use pingora::http::ResponseHeader;
use pingora::prelude::*;

use super::chain::empty;
use crate::forward::h1::response_head::ResponseHead;
use crate::forward::relay::{relay, Source};
use crate::host::component::{ErrorCode, Next, WasiBody};
use crate::proxy::{props, Ctx, Sluice};

/// Request body chunks in flight between the client and the chain.
const BODY_QUEUE: usize = 4;

/// A chunk of the request body on its way to the chain.
type Chunk = Result<Frame<Bytes>, wasmtime_wasi_http::Error>;

/// Runs the request in `session` through `entry` and sends the response through the
/// route's Proxy-Wasm response phases to the client. `held`: the request body the
/// Proxy-Wasm filters already read (else a body is streamed through their request-body
/// phase). A chain that answers an error (no response) is a 502. The request carries its
/// `sluice:edge` facts ([`Ctx::edge_info`]) to the guests.
pub async fn serve(
    s: &Sluice,
    session: &mut Downstream<'_>,
    ctx: &mut Ctx,
    entry: &Next,
    held: Option<Bytes>,
    tls: bool,
) -> Result<()> {
    let streaming = held.is_none() && !session.is_body_empty();
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(BODY_QUEUE);
    let body: WasiBody = match held {
        Some(b) => Full::new(b).map_err(|never| match never {}).boxed_unsync(),
        None if streaming => StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
        .boxed_unsync(),
        None => empty(),
    };
    let target = Target {
        path: ctx.upstream_prop(props::PATH),
        host: ctx.upstream_prop(props::HOST),
    };
    let mut request = request(session, body, tls, &target)?;
    request
        .extensions_mut()
        .insert(std::sync::Arc::new(ctx.edge_info(session)));
    if let Some(choice) = ctx.chosen_upstream() {
        request.extensions_mut().insert(std::sync::Arc::new(choice));
    }
    let response = feed(s, session, ctx, entry(request), streaming.then_some(tx)).await?;
    let response = response.map_err(|code| {
        tracing::warn!(error = ?code, "component chain answered an error");
        Error::explain(
            ErrorType::HTTPStatus(502),
            format!("component chain: {code:?}"),
        )
    })?;
    let (parts, mut body) = response.into_parts();
    let mut head = ResponseHeader::build(parts.status.as_u16(), Some(parts.headers.len() + 1))?;
    for (name, value) in parts.headers.iter() {
        if !crate::hop::is_hop_by_hop(name.as_str()) {
            head.append_header(name.clone(), value.clone())?;
        }
    }
    relay(
        s,
        session,
        ctx,
        ResponseHead::Built(Box::new(head)),
        Source::Component(&mut body),
    )
    .await
}

/// The request of `session` as the chain takes it (absolute URI, no hop-by-hop headers),
/// at the path and host the Proxy-Wasm filters chose for the upstream, if any.
fn request(
    session: &Downstream<'_>,
    body: WasiBody,
    tls: bool,
    target: &Target,
) -> Result<http::Request<WasiBody>> {
    let req = session.req_header();
    let authority = target
        .host
        .clone()
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .or_else(|| req.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".into());
    let path = match &target.path {
        Some(p) => p.as_str(),
        None => req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
    };
    let uri = format!("{}://{authority}{path}", if tls { "https" } else { "http" });
    let mut builder = http::Request::builder()
        .method(req.method.clone())
        .uri(uri.as_str());
    for (name, value) in req.headers.iter() {
        if !crate::hop::is_hop_by_hop(name.as_str()) && name != http::header::HOST {
            builder = builder.header(name, value);
        }
    }
    builder
        .body(body)
        .map_err(|e| Error::explain(ErrorType::HTTPStatus(400), format!("request: {e}")))
}

/// Where the route's Proxy-Wasm filters sent the request (`sluice.upstream.path`,
/// `sluice.upstream.host`): the component chain gets it so, as a pool would.
struct Target {
    path: Option<String>,
    host: Option<String>,
}

/// Drives the chain to its response head while the client's request body, chunk by
/// chunk through the Proxy-Wasm request-body phase, goes to it through `tx`. A chain
/// that answers before taking the whole body leaves the rest unread (and the client
/// connection is not reused); a Proxy-Wasm filter that answers during the body ends
/// the request with its answer (the chain is dropped).
async fn feed(
    s: &Sluice,
    session: &mut Downstream<'_>,
    ctx: &mut Ctx,
    response: impl std::future::Future<Output = Result<http::Response<WasiBody>, ErrorCode>>,
    mut tx: Option<tokio::sync::mpsc::Sender<Chunk>>,
) -> Result<Result<http::Response<WasiBody>, ErrorCode>> {
    let mut response = pin!(response);
    loop {
        let Some(sender) = tx.clone() else {
            return Ok(response.await);
        };
        let chunk = tokio::select! {
            r = &mut response => {
                session.set_keepalive(None);
                return Ok(r);
            }
            chunk = session.read_request_body() => chunk?,
        };
        let end = chunk.is_none() || session.is_body_done();
        let mut body = chunk;
        s.request_body_filter(session, &mut body, end, ctx).await?;
        if let Some(data) = body.filter(|b| !b.is_empty()) {
            // The chain may answer while the queue is full: keep driving it.
            tokio::select! {
                r = &mut response => {
                    session.set_keepalive(None);
                    return Ok(r);
                }
                sent = sender.send(Ok(Frame::data(data))) => {
                    if sent.is_err() {
                        // The chain dropped the body: the rest stays unread.
                        session.set_keepalive(None);
                        tx = None;
                        continue;
                    }
                }
            }
        }
        if end {
            tx = None;
        }
    }
}
