//! The request head sent upstream: a copy of the client's (after the filters), without
//! the hop-by-hop fields, in the upstream's HTTP version, framed for the body it carries.

use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::ErrorType;

/// The upstream copy of `req`, for an HTTP/2 upstream when `h2`, HTTP/1.1 otherwise.
pub fn upstream_head(req: &RequestHeader, h2: bool) -> RequestHeader {
    let mut up = req.clone();
    // Names the client listed in `Connection` were removed before the filters ran
    // (`crate::hop`); a filter may have set hop-by-hop fields since.
    // The framing field is set again for the upstream by [`frame`].
    crate::hop::remove_where(&mut up, crate::hop::is_hop_by_hop);
    up.set_version(if h2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    });
    up
}

/// Frames the request after `upstream_request_filter`. HTTP/1.1: a body without
/// `Content-Length` goes chunked, and `Host` is present (the request target's authority,
/// or empty: RFC 9112 §3.2). HTTP/2: `Host` becomes the `:authority` of an
/// absolute URI, as HTTP/2 carries no `Host` on the wire.
pub fn frame(up: &mut RequestHeader, has_body: bool, h2: bool, tls: bool) -> Result<()> {
    if h2 {
        let host = up.remove_header(&http::header::HOST);
        let authority = match &host {
            Some(h) => Some(h.as_bytes().to_vec()),
            None => up.uri.authority().map(|a| a.as_str().as_bytes().to_vec()),
        };
        if let Some(authority) = authority {
            let authority = http::uri::Authority::try_from(authority.as_slice())
                .ok()
                .filter(|a| !a.as_str().contains('@'))
                .ok_or_else(|| {
                    Error::explain(ErrorType::InvalidHTTPHeader, "invalid Host for HTTP/2")
                })?;
            let path = up
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            let uri = http::Uri::builder()
                .scheme(if tls { "https" } else { "http" })
                .authority(authority)
                .path_and_query(path)
                .build()
                .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "invalid HTTP/2 URI"))?;
            up.set_uri(uri);
        }
        return Ok(());
    }
    if !up.headers.contains_key(http::header::HOST) {
        let authority = up
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        up.insert_header(http::header::HOST, authority)?;
    }
    if has_body
        && !up.headers.contains_key(http::header::CONTENT_LENGTH)
        && !up.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        up.insert_header(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        )?;
    }
    Ok(())
}
