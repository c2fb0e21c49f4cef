//! `add-header`: a middleware (`wasi:http/middleware`). It adds `x-component: add-header` to
//! the request it passes on, calls the next handler, and adds `x-component-response:
//! add-header` to the response on the way back. Bodies pass through untouched (streamed).

use wasip3::http::types::{ErrorCode, Request, Response};
use wasip3::wit_future;

struct AddHeader;

impl wasip3::exports::http::handler::Guest for AddHeader {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let request = with_request_header(request, "x-component", b"add-header")?;
        let response = next::next(request).await?;
        with_response_header(response, "x-component-response", b"add-header")
    }
}

/// The same request with one more header (request headers are immutable: copy, append, rebuild).
fn with_request_header(request: Request, name: &str, value: &[u8]) -> Result<Request, ErrorCode> {
    let headers = request.get_headers().clone();
    headers
        .append(name, value)
        .map_err(|_| ErrorCode::InternalError(Some("header".into())))?;
    let method = request.get_method();
    let path = request.get_path_with_query();
    let scheme = request.get_scheme();
    let authority = request.get_authority();
    let options = request.get_options();
    let (done_tx, done_rx) = wit_future::new(|| Ok(()));
    let (body, trailers) = Request::consume_body(request, done_rx);
    let (out, _sent) = Request::new(headers, Some(body), trailers, options);
    drop(done_tx);
    let _ = out.set_method(&method);
    let _ = out.set_path_with_query(path.as_deref());
    let _ = out.set_scheme(scheme.as_ref());
    let _ = out.set_authority(authority.as_deref());
    Ok(out)
}

/// The same response with one more header.
fn with_response_header(
    response: Response,
    name: &str,
    value: &[u8],
) -> Result<Response, ErrorCode> {
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

wasip3::http::service::export!(AddHeader);
