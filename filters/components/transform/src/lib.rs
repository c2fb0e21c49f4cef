//! `transform`: a streaming body transform (middleware). It passes the request on, then
//! upper-cases the ASCII letters of the response body chunk by chunk as they arrive, never
//! holding more than one chunk, so a body far larger than the guest's memory streams through.
//! The length does not change; `content-length` is kept. Adds `x-transform: upper`.

use wasip3::http::types::{ErrorCode, Request, Response};
use wasip3::wit_bindgen::StreamResult;
use wasip3::{wit_future, wit_stream};

/// Bytes asked for per read: the most the guest holds at once.
const CHUNK: usize = 64 * 1024;

struct Transform;

impl wasip3::exports::http::handler::Guest for Transform {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let response = next::next(request).await?;
        let headers = response.get_headers().clone();
        let _ = headers.append("x-transform", b"upper");
        let status = response.get_status_code();
        let (done_tx, done_rx) = wit_future::new(|| Ok(()));
        let (mut body_in, trailers_in) = Response::consume_body(response, done_rx);
        let (mut body_out, body_rx) = wit_stream::new::<u8>();
        let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
        let (out, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
        let _ = out.set_status_code(status);
        wit_bindgen::spawn_local(async move {
            let mut buf = Vec::with_capacity(CHUNK);
            loop {
                let (result, mut chunk) = body_in.read(buf).await;
                match result {
                    StreamResult::Complete(_) => {
                        chunk.make_ascii_uppercase();
                        let rest = body_out.write_all(chunk).await;
                        if !rest.is_empty() {
                            break;
                        }
                        buf = Vec::with_capacity(CHUNK);
                    }
                    StreamResult::Dropped | StreamResult::Cancelled => break,
                }
            }
            drop(body_out);
            drop(done_tx);
            let trailers = trailers_in.await;
            let _ = trailers_tx.write(trailers).await;
        });
        Ok(out)
    }
}

wasip3::http::service::export!(Transform);
