//! `fleet_counter`: a middleware (`wasi:http/middleware`) that counts each client's
//! requests on the fleet store Sluice nodes share (`sluice:edge/fleet`, the policy's
//! `[fleet]` on Redis) and answers 429 itself past the limit. Not portable: it imports
//! `sluice:edge` (`request-info` for the client's address, `fleet` for the counter).
//!
//! - The key is the client's address (`x-counter-key: KEY` instead, for tests and for a
//!   client behind a known proxy), counted in a fixed window of 60 s with `fleet.incr`.
//!   The limit is 5 per window (`x-counter-limit: N` instead).
//! - Within the limit the request goes on; the response gets `x-counter: COUNT` and
//!   `x-counter-remaining: N`. Past it: 429 with `retry-after` (seconds).
//! - The store failing (not configured, down, slow, a refused key) never fails the
//!   request: it goes on uncounted (fail open), and the response says why in
//!   `x-counter-error: not-configured|unavailable|timeout|invalid`.
//!
//! For tests, a request with `x-kv` is answered by the guest itself (200, `x-kv-result: 1`)
//! in the line protocol of the Proxy-Wasm `fleetkv` filter: `get KEY` (`found VALUE` or
//! `absent`), `set KEY TTL_MS VALUE` (`done`; TTL 0: never), `setn KEY N` (a value of
//! N bytes, `done`), `cas KEY EXPECTED NEW` (`-`: only when absent; `swapped 1|0`); a
//! failure: `failed KIND MESSAGE`.

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_future, wit_stream};

wit_bindgen::generate!({
    path: "../../../wit/sluice-edge",
    world: "sluice:edge/middleware",
});

use sluice::edge::fleet::{self, Error as FleetError};
use sluice::edge::request_info;

/// The counter's window.
const WINDOW_MS: u32 = 60_000;
/// Requests a client may make per window unless `x-counter-limit` says otherwise.
const LIMIT: u32 = 5;

struct FleetCounter;

/// A request header's first value as text.
fn header(request: &Request, name: &str) -> Option<String> {
    let value = request.get_headers().get(name).into_iter().next()?;
    String::from_utf8(value).ok()
}

/// The error's WIT case name, and its text if any.
fn describe(e: &FleetError) -> (&'static str, String) {
    match e {
        FleetError::NotConfigured => ("not-configured", String::new()),
        FleetError::Unavailable(m) => ("unavailable", m.clone()),
        FleetError::Timeout => ("timeout", String::new()),
        FleetError::Invalid(m) => ("invalid", m.clone()),
    }
}

/// Runs one `x-kv` line: the text answered.
async fn kv(line: &str) -> String {
    let mut w = line.splitn(4, ' ');
    let (Some(op), Some(key)) = (w.next(), w.next()) else {
        return "bad x-kv".into();
    };
    let key = key.to_string();
    let ttl = |t: u32| (t > 0).then_some(t);
    let out = match op {
        "get" => fleet::get(key).await.map(|v| match v {
            Some(v) => format!("found {}", String::from_utf8_lossy(&v)),
            None => "absent".into(),
        }),
        "set" => {
            let Some(Ok(t)) = w.next().map(str::parse::<u32>) else {
                return "bad x-kv".into();
            };
            let value = w.next().unwrap_or("").as_bytes().to_vec();
            fleet::set(key, value, ttl(t)).await.map(|()| "done".into())
        }
        "setn" => {
            let Some(Ok(n)) = w.next().map(str::parse::<usize>) else {
                return "bad x-kv".into();
            };
            fleet::set(key, vec![b'x'; n], None)
                .await
                .map(|()| "done".into())
        }
        "cas" => {
            let expected = match w.next() {
                Some("-") => None,
                Some(e) => Some(e.as_bytes().to_vec()),
                None => return "bad x-kv".into(),
            };
            let new = w.next().unwrap_or("").as_bytes().to_vec();
            fleet::cas(key, expected, new, None)
                .await
                .map(|s| format!("swapped {}", s as u8))
        }
        _ => return "bad x-kv".into(),
    };
    out.unwrap_or_else(|e| {
        let (kind, message) = describe(&e);
        format!("failed {kind} {message}")
    })
}

impl wasip3::exports::http::handler::Guest for FleetCounter {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        if let Some(line) = header(&request, "x-kv") {
            let body = kv(&line).await;
            return answer(200, &[("x-kv-result", "1".into())], body.into_bytes());
        }
        let key = header(&request, "x-counter-key")
            .or_else(request_info::client_address)
            .unwrap_or_else(|| "unknown".into());
        let limit = header(&request, "x-counter-limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(LIMIT);
        let extra = match fleet::incr(format!("client:{key}"), WINDOW_MS, limit).await {
            Ok(c) if c.count > limit || !c.counted => {
                let retry = c.reset_ms.div_ceil(1000).max(1);
                return answer(
                    429,
                    &[
                        ("x-counter", c.count.to_string()),
                        ("x-counter-remaining", "0".into()),
                        ("retry-after", retry.to_string()),
                    ],
                    b"too many requests\n".to_vec(),
                );
            }
            Ok(c) => vec![
                ("x-counter", c.count.to_string()),
                ("x-counter-remaining", (limit - c.count).to_string()),
            ],
            // Fail open: the store's trouble is not the client's.
            Err(e) => vec![("x-counter-error", describe(&e).0.to_string())],
        };
        let response = next::next(request).await?;
        with_headers(response, &extra)
    }
}

/// A response of the guest's own.
fn answer(status: u16, headers: &[(&str, String)], body: Vec<u8>) -> Result<Response, ErrorCode> {
    let mut list: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone().into_bytes()))
        .collect();
    list.push(("content-type".into(), b"text/plain".to_vec()));
    let headers = Fields::from_list(&list).map_err(|_| ErrorCode::InternalError(None))?;
    let (mut tx, rx) = wit_stream::new::<u8>();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(rx), trailers_rx);
    let _ = response.set_status_code(status);
    wit_bindgen::spawn_local(async move {
        let _ = tx.write_all(body).await;
        drop(tx);
        let _ = trailers_tx.write(Ok(None)).await;
    });
    Ok(response)
}

/// The same response with more headers.
fn with_headers(response: Response, extra: &[(&str, String)]) -> Result<Response, ErrorCode> {
    let headers = response.get_headers().clone();
    for (name, value) in extra {
        headers
            .append(name, value.as_bytes())
            .map_err(|_| ErrorCode::InternalError(Some("header".into())))?;
    }
    let status = response.get_status_code();
    let (done_tx, done_rx) = wit_future::new(|| Ok(()));
    let (body, trailers) = Response::consume_body(response, done_rx);
    let (out, _sent) = Response::new(headers, Some(body), trailers);
    drop(done_tx);
    let _ = out.set_status_code(status);
    Ok(out)
}

wasip3::http::service::export!(FleetCounter);
