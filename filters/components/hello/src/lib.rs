//! `hello`: an edge function (`wasi:http/service`). It answers every request itself with a
//! short text naming the method and path; a route that ends in it needs no pool.

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response};
use wasip3::{wit_future, wit_stream};

struct Hello;

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let method = match request.get_method() {
            Method::Get => "GET".to_string(),
            Method::Post => "POST".to_string(),
            Method::Head => "HEAD".to_string(),
            other => format!("{other:?}"),
        };
        let path = request.get_path_with_query().unwrap_or_default();
        let text = format!("hello from a component: {method} {path}\n");
        let headers = Fields::from_list(&[
            ("content-type".to_string(), b"text/plain".to_vec()),
            ("x-edge-function".to_string(), b"hello".to_vec()),
        ])
        .map_err(|_| ErrorCode::InternalError(None))?;
        let (mut body_tx, body_rx) = wit_stream::new::<u8>();
        let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
        wit_bindgen::spawn_local(async move {
            let _ = body_tx.write_all(text.into_bytes()).await;
            drop(body_tx);
            let _ = trailers_tx.write(Ok(None)).await;
        });
        Ok(response)
    }
}

wasip3::http::service::export!(Hello);
