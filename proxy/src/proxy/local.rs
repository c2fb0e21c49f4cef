//! Sluice's own answers: plain-text replies, a filter's local response, the HTTPS
//! redirect, and the errors that end a request.

use crate::downstream::Downstream;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::ErrorType;

use crate::host::LocalResponse;
use crate::snapshot::Snapshot;

pub(super) fn bad(msg: &'static str) -> Box<Error> {
    Error::explain(ErrorType::InternalError, msg)
}

pub(super) fn local_header(local: &LocalResponse) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(local.status, Some(local.headers.len() + 2))?;
    for (k, v) in &local.headers {
        if !k.starts_with(':') && !k.eq_ignore_ascii_case("content-length") {
            resp.append_header(k.clone(), v.as_slice())?;
        }
    }
    if !local.body.is_empty() && !resp.headers.contains_key(http::header::CONTENT_TYPE) {
        // As Envoy's local replies: plain text unless the filter said otherwise.
        resp.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, local.body.len().to_string())?;
    Ok(resp)
}

/// A plain-text answer of Sluice's own.
pub(super) fn plain(status: u16, details: &str, body: &str) -> LocalResponse {
    LocalResponse {
        status,
        details: details.into(),
        body: body.as_bytes().to_vec(),
        headers: vec![("content-type".into(), b"text/plain".to_vec())],
    }
}

pub(super) async fn send_local(session: &mut Downstream<'_>, local: &LocalResponse) -> Result<()> {
    let resp = local_header(local)?;
    let empty = local.body.is_empty();
    session.write_response_header(Box::new(resp), empty).await?;
    if !empty {
        session
            .write_response_body(Some(Bytes::copy_from_slice(&local.body)), true)
            .await?;
    }
    Ok(())
}

/// Answers a cleartext request with a permanent redirect to the same URL over HTTPS
/// (the policy's first TLS port, omitted when 443).
pub(super) async fn redirect_https(
    session: &mut Downstream<'_>,
    snap: &Snapshot,
    host: &str,
) -> Result<bool> {
    let port = snap
        .policy
        .tls
        .as_ref()
        .and_then(|t| t.listen.first())
        .map(|a| a.port())
        .unwrap_or(443);
    let path = session
        .req_header()
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    send_local(
        session,
        &LocalResponse {
            status: 308,
            details: "redirect to https".into(),
            body: Vec::new(),
            headers: vec![("location".into(), location.into_bytes())],
        },
    )
    .await?;
    Ok(true)
}

pub(super) fn reset() -> Box<Error> {
    Error::explain(ErrorType::ConnectionClosed, "a filter reset the stream")
}
