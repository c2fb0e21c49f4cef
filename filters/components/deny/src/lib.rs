//! `deny`: a middleware that answers 403 itself (the next handler never sees the request)
//! when the request carries `x-deny` or its path starts with `/admin`; otherwise it passes
//! the request on unchanged.

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_future, wit_stream};

struct Deny;

impl wasip3::exports::http::handler::Guest for Deny {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        let flagged = !request.get_headers().get("x-deny").is_empty();
        if !flagged && !path.starts_with("/admin") {
            return next::next(request).await;
        }
        let headers = Fields::from_list(&[
            ("content-type".to_string(), b"text/plain".to_vec()),
            ("x-denied-by".to_string(), b"deny-component".to_vec()),
        ])
        .map_err(|_| ErrorCode::InternalError(None))?;
        let (mut body_tx, body_rx) = wit_stream::new::<u8>();
        let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
        response
            .set_status_code(403)
            .map_err(|_| ErrorCode::InternalError(None))?;
        wit_bindgen::spawn_local(async move {
            let _ = body_tx.write_all(b"denied by a component\n".to_vec()).await;
            drop(body_tx);
            let _ = trailers_tx.write(Ok(None)).await;
        });
        Ok(response)
    }
}

wasip3::http::service::export!(Deny);
