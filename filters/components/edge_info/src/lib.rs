//! `edge_info`: an edge function (`wasi:http/service`) that also imports Sluice's own
//! `sluice:edge/request-info` (not portable: it runs only in Sluice). It answers with the
//! facts Sluice gives it about the request, as response headers and as text:
//! `x-edge-route`, `x-edge-client`, `x-edge-sni`, `x-edge-request-id`, `x-edge-protocol`,
//! `x-edge-generation` (a fact that is absent gives no header); with two more for tests:
//! `x-seen-request-id`, the `x-request-id` header of the request it received, and
//! `x-edge-served`, the requests this instance has served (1 on a fresh instance).
//!
//! It reads the facts twice: when called, and again once its request body ended (read by
//! a task of its own, after the response left, while other requests may have started on
//! the same instance): the body's last line, `stable: true`, says both reads agreed.

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::wit_bindgen::StreamResult;
use wasip3::{wit_future, wit_stream};

wit_bindgen::generate!({
    path: "../../../wit/sluice-edge",
    world: "sluice:edge/imports",
});

use sluice::edge::request_info;

struct EdgeInfo;

/// Requests this instance has served (more than 1 only when Sluice reuses it).
static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The facts, as (header, value) pairs.
fn facts() -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("x-edge-route", request_info::route()),
        ("x-edge-request-id", request_info::request_id()),
        ("x-edge-protocol", request_info::protocol()),
        ("x-edge-generation", request_info::generation().to_string()),
    ];
    if let Some(client) = request_info::client_address() {
        out.push(("x-edge-client", client));
    }
    if let Some(sni) = request_info::sni() {
        out.push(("x-edge-sni", sni));
    }
    out
}

impl wasip3::exports::http::handler::Guest for EdgeInfo {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let served = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let before = facts();
        let seen = request.get_headers().get("x-request-id");
        let (done_tx, done_rx) = wit_future::new(|| Ok(()));
        let (mut body_in, _trailers_in) = Request::consume_body(request, done_rx);
        let mut text = String::new();
        let mut list: Vec<(String, Vec<u8>)> =
            vec![("content-type".to_string(), b"text/plain".to_vec())];
        for (name, value) in &before {
            text.push_str(&format!("{name}: {value}\n"));
            list.push((name.to_string(), value.clone().into_bytes()));
        }
        list.push(("x-edge-served".to_string(), served.to_string().into_bytes()));
        if let Some(id) = seen.into_iter().next() {
            list.push(("x-seen-request-id".to_string(), id));
        }
        let headers = Fields::from_list(&list).map_err(|_| ErrorCode::InternalError(None))?;
        let (mut body_tx, body_rx) = wit_stream::new::<u8>();
        let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
        wit_bindgen::spawn_local(async move {
            let _ = body_tx.write_all(text.into_bytes()).await;
            // The request body to its end (discarded).
            let mut buf = Vec::with_capacity(1024);
            loop {
                let (result, chunk) = body_in.read(buf).await;
                match result {
                    StreamResult::Complete(_) => buf = Vec::with_capacity(chunk.capacity()),
                    StreamResult::Dropped | StreamResult::Cancelled => break,
                }
            }
            drop(done_tx);
            // After the response left (another request may have started on this
            // instance): the facts are still this request's.
            let stable = facts() == before;
            let _ = body_tx
                .write_all(format!("stable: {stable}\n").into_bytes())
                .await;
            drop(body_tx);
            let _ = trailers_tx.write(Ok(None)).await;
        });
        Ok(response)
    }
}

wasip3::http::service::export!(EdgeInfo);
