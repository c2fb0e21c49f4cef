//! Pingora's session to and from `http` types for a component chain: the request head and
//! body go in (the body streamed, or the one the Proxy-Wasm filters already hold), the
//! response head and body come out, streamed to the client.

use std::pin::pin;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use pingora::http::ResponseHeader;
use pingora::prelude::*;

use super::chain::empty;
use crate::host::component::{Next, WasiBody};

/// Request and response headers that belong to one hop, never handed on.
const HOP: [http::HeaderName; 6] = [
    http::header::CONNECTION,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::TE,
    http::header::TRAILER,
    http::header::HeaderName::from_static("keep-alive"),
];

/// Runs the request in `session` through `entry` and writes the response; `held`: the
/// request body the Proxy-Wasm filters already read. Returns the status sent.
pub async fn serve(
    session: &mut Session,
    entry: &Next,
    held: Option<Bytes>,
    tls: bool,
) -> Result<u16> {
    let req = session.req_header();
    let authority = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".into());
    let path = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri = format!("{}://{authority}{path}", if tls { "https" } else { "http" });
    let mut builder = http::Request::builder()
        .method(req.method.clone())
        .uri(uri.as_str());
    for (name, value) in req.headers.iter() {
        if !HOP.contains(name) && name != http::header::HOST {
            builder = builder.header(name, value);
        }
    }
    let streaming = held.is_none() && !session.is_body_empty();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, wasmtime_wasi_http::Error>>(4);
    let body: WasiBody = match held {
        Some(b) => Full::new(b).map_err(|never| match never {}).boxed_unsync(),
        None if streaming => StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
        .boxed_unsync(),
        None => empty(),
    };
    let request = builder
        .body(body)
        .map_err(|e| Error::explain(ErrorType::HTTPStatus(400), format!("request: {e}")))?;
    let mut response = pin!(entry(request));
    let mut tx = streaming.then_some(tx);
    // Feed the request body while the chain works; a chain that answers before reading
    // all of it leaves the rest unread (and the connection is not reused).
    let response = loop {
        let Some(sender) = tx.as_ref() else {
            break response.await;
        };
        tokio::select! {
            r = &mut response => {
                session.set_keepalive(None);
                break r;
            }
            chunk = session.read_request_body() => match chunk? {
                Some(data) => {
                    if sender.send(Ok(Frame::data(data))).await.is_err() {
                        tx = None;
                        session.set_keepalive(None);
                    }
                }
                None => tx = None,
            },
        }
    };
    let response = match response {
        Ok(r) => r,
        Err(code) => {
            tracing::warn!(error = ?code, "component chain answered an error");
            let mut head = ResponseHeader::build(502, Some(2))?;
            head.insert_header(http::header::CONTENT_LENGTH, "0")?;
            session.write_response_header(Box::new(head), true).await?;
            return Ok(502);
        }
    };
    let (parts, mut body) = response.into_parts();
    let status = parts.status.as_u16();
    let mut head = ResponseHeader::build(status, Some(parts.headers.len() + 1))?;
    for (name, value) in parts.headers.iter() {
        if !HOP.contains(name) {
            head.append_header(name.clone(), value.clone())?;
        }
    }
    crate::proxy::frame_response(session.req_header(), &mut head)?;
    let bodiless = session.req_header().method == http::Method::HEAD || matches!(status, 204 | 304);
    session
        .write_response_header(Box::new(head), bodiless)
        .await?;
    if bodiless {
        return Ok(status);
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Error::explain(
                ErrorType::WriteError,
                format!("component response body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                session.write_response_body(Some(data), false).await?;
            }
        }
    }
    session
        .write_response_body(Some(Bytes::new()), true)
        .await?;
    Ok(status)
}
