//! `hostile`: a middleware that misbehaves on purpose, for the host's fault-isolation tests.
//! By path: `/loop` spins forever (the epoch deadline must stop it), `/trap` traps
//! (`unreachable`), `/count` answers with how many requests this instance has seen (shows
//! whether instances are reused), anything else goes to the next handler with
//! `x-hostile-count` set to the same count.

use std::sync::atomic::{AtomicU64, Ordering};

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_future, wit_stream};

static SEEN: AtomicU64 = AtomicU64::new(0);

struct Hostile;

impl wasip3::exports::http::handler::Guest for Hostile {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let seen = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
        let path = request.get_path_with_query().unwrap_or_default();
        if path.starts_with("/loop") {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        if path.starts_with("/trap") {
            core::arch::wasm32::unreachable();
        }
        if path.starts_with("/grow") {
            let big = vec![1u8; 100 << 20];
            return Ok(text(format!("{}\n", std::hint::black_box(big).len())));
        }
        if path.starts_with("/count") {
            return Ok(text(format!("{seen}\n")));
        }
        let response = next::next(request).await?;
        let _ = response.get_headers();
        Ok(response)
    }
}

/// A 200 text response.
fn text(body: String) -> Response {
    let headers = Fields::from_list(&[("x-hostile-count".to_string(), body.trim().as_bytes().to_vec())])
        .unwrap_or_else(|_| Fields::new());
    let (mut tx, rx) = wit_stream::new::<u8>();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(rx), trailers_rx);
    wit_bindgen::spawn_local(async move {
        let _ = tx.write_all(body.into_bytes()).await;
        drop(tx);
        let _ = trailers_tx.write(Ok(None)).await;
    });
    response
}

wasip3::http::service::export!(Hostile);
