//! `visits`: an edge function (`wasi:http/service`) that counts the visits of each path on
//! the fleet store Sluice nodes share (`sluice:edge/fleet`, the policy's `[fleet]` on
//! Redis), per day: `visit N of PATH today`, and `x-visits: N`. It imports nothing of the
//! request's state (only `sluice:edge/fleet`), so any instance reuse may run it.
//!
//! When the store fails it still answers, 503 with `x-fleet-error:
//! not-configured|unavailable|timeout|invalid` and the reason as text (an edge function has
//! no origin to fall back to).

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_future, wit_stream};

wit_bindgen::generate!({
    path: "../../../wit/sluice-edge",
    world: "sluice:edge/imports",
});

use sluice::edge::fleet::{self, Error as FleetError};

/// A day: the counter's window.
const DAY_MS: u32 = 86_400_000;

struct Visits;

impl wasip3::exports::http::handler::Guest for Visits {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_else(|| "/".into());
        let path = path.split('?').next().unwrap_or("/").to_string();
        match fleet::incr(format!("path:{path}"), DAY_MS, u32::MAX).await {
            Ok(c) => answer(
                200,
                &[("x-visits", c.count.to_string())],
                format!("visit {} of {path} today\n", c.count),
            ),
            Err(e) => {
                let (kind, why) = match e {
                    FleetError::NotConfigured => ("not-configured", String::new()),
                    FleetError::Unavailable(m) => ("unavailable", m),
                    FleetError::Timeout => ("timeout", String::new()),
                    FleetError::Invalid(m) => ("invalid", m),
                };
                answer(
                    503,
                    &[("x-fleet-error", kind.to_string())],
                    format!("visits unknown: fleet store {kind} {why}\n"),
                )
            }
        }
    }
}

/// A text response.
fn answer(status: u16, headers: &[(&str, String)], text: String) -> Result<Response, ErrorCode> {
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
        let _ = tx.write_all(text.into_bytes()).await;
        drop(tx);
        let _ = trailers_tx.write(Ok(None)).await;
    });
    Ok(response)
}

wasip3::http::service::export!(Visits);
