//! `steer`: a middleware (`wasi:http/middleware`) that also imports Sluice's own
//! `sluice:edge/upstream` (not portable: it runs only in Sluice). It chooses where the
//! request it passes on goes:
//!
//! - `x-steer-pool: NAME`: to the policy's pool `NAME` instead of the route's;
//! - `x-steer-key: KEY`: with `KEY` as the consistent-hash key instead of the pool's own.
//!
//! The response gets `x-steer-choice: POOL KEY` (the choice as Sluice kept it, `-` for
//! none). When the next handler fails (an unknown pool: `destination-not-found`), it
//! answers 502 itself with `x-steer-error: <the error code>`.

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::wit_future;

wit_bindgen::generate!({
    path: "../../../wit/sluice-edge",
    world: "sluice:edge/middleware",
});

use sluice::edge::upstream;

struct Steer;

/// A request header's first value as text.
fn header(request: &Request, name: &str) -> Option<String> {
    let value = request.get_headers().get(name).into_iter().next()?;
    String::from_utf8(value).ok()
}

impl wasip3::exports::http::handler::Guest for Steer {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        if let Some(pool) = header(&request, "x-steer-pool") {
            upstream::set_pool(Some(&pool));
        }
        if let Some(key) = header(&request, "x-steer-key") {
            upstream::set_hash_key(Some(&key));
        }
        let (pool, key) = upstream::choice();
        let choice = format!(
            "{} {}",
            pool.as_deref().unwrap_or("-"),
            key.as_deref().unwrap_or("-")
        );
        match next::next(request).await {
            Ok(response) => with_header(response, "x-steer-choice", choice.as_bytes()),
            Err(code) => {
                let list = vec![
                    ("x-steer-error".to_string(), error_name(&code).into_bytes()),
                    ("x-steer-choice".to_string(), choice.into_bytes()),
                ];
                let headers =
                    Fields::from_list(&list).map_err(|_| ErrorCode::InternalError(None))?;
                let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
                let (response, _sent) = Response::new(headers, None, trailers_rx);
                drop(trailers_tx);
                let _ = response.set_status_code(502);
                Ok(response)
            }
        }
    }
}

/// The error code's WIT name (`destination-not-found`), others as debug text.
fn error_name(code: &ErrorCode) -> String {
    match code {
        ErrorCode::DestinationNotFound => "destination-not-found".into(),
        ErrorCode::DestinationUnavailable => "destination-unavailable".into(),
        ErrorCode::ConnectionRefused => "connection-refused".into(),
        other => format!("{other:?}"),
    }
}

/// The same response with one more header.
fn with_header(response: Response, name: &str, value: &[u8]) -> Result<Response, ErrorCode> {
    let headers = response.get_headers().clone();
    headers
        .append(name, value)
        .map_err(|_| ErrorCode::InternalError(Some("header".into())))?;
    let status = response.get_status_code();
    let (done_tx, done_rx) = wit_future::new(|| Ok(()));
    let (body, trailers) = Response::consume_body(response, done_rx);
    let (out, _sent) = Response::new(headers, Some(body), trailers);
    drop(done_tx);
    let _ = out.set_status_code(status);
    Ok(out)
}

wasip3::http::service::export!(Steer);
