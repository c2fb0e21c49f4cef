//! Writing an HTTP/1.1 request head: the request line and the fields as Pingora's
//! `RequestHeader` keeps them (names in their case, in order, duplicates kept:
//! `header_to_h1_wire`), serialised into one buffer for one write.

use bytes::BufMut;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::ErrorType;

/// Appends `req`'s head to `buf`. Refuses (`InvalidHTTPHeader`) a request target with a
/// byte that would split the request line (NUL, CR, LF, SP), or a version other than
/// HTTP/1.0 or HTTP/1.1, as Pingora's `http_req_header_to_wire` does. Field values
/// cannot hold CR, LF or NUL (`http::HeaderValue` refuses them when they are set).
pub fn encode(req: &RequestHeader, buf: &mut impl BufMut) -> Result<()> {
    let target = checked_target(req)?;
    let version: &[u8] = match req.version {
        http::Version::HTTP_11 => b" HTTP/1.1\r\n",
        http::Version::HTTP_10 => b" HTTP/1.0\r\n",
        _ => {
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "unsupported HTTP version for an HTTP/1 upstream",
            ))
        }
    };
    buf.put_slice(req.method.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(target);
    buf.put_slice(version);
    req.header_to_h1_wire(buf);
    buf.put_slice(b"\r\n");
    Ok(())
}

/// The request target, refused (`InvalidHTTPHeader`) when a byte of it would split the
/// request line (NUL, CR, LF, SP).
fn checked_target(req: &RequestHeader) -> Result<&[u8]> {
    let target = req.raw_path();
    if target.iter().any(|b| matches!(b, 0 | b'\n' | b'\r' | b' ')) {
        return Err(Error::explain(
            ErrorType::InvalidHTTPHeader,
            "request target contains a forbidden byte",
        ));
    }
    Ok(target)
}

/// How [`encode_forwarded`] framed the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// `Transfer-Encoding: chunked` was added.
    Chunked,
    /// The body is as long as the kept `Content-Length` says (none: no body).
    Length,
}

/// Appends, as HTTP/1.1, the head Sluice forwards for the client's `req` when nothing
/// but its transport and metadata change: the fields `dropped` names are left out,
/// the `added` ones follow the client's, then `Host` is added when it has none (the
/// target's authority, or empty: RFC 9112 §3.2), then `Transfer-Encoding: chunked`
/// when `has_body` and no `Content-Length` is kept. The lines are those [`encode`]
/// writes for a copy of `req` with the dropped fields removed, the added ones
/// inserted, the version set to HTTP/1.1 and those two fields inserted, without the
/// copy (a request head's clone is ~2 k instructions and several allocations, issue
/// #18); the fields keep the client's order. A head that keeps no field-name case (one
/// read from HTTP/2) has its names written as Pingora writes such a head's ([`titled`]).
pub fn encode_forwarded<'a>(
    req: &RequestHeader,
    has_body: bool,
    dropped: impl Fn(&http::HeaderName) -> bool,
    added: impl Iterator<Item = (&'a str, &'a [u8])>,
    buf: &mut impl BufMut,
) -> Result<Framed> {
    let target = checked_target(req)?;
    buf.put_slice(req.method.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(target);
    buf.put_slice(b" HTTP/1.1\r\n");
    let (mut host, mut length) = (false, false);
    let mut kept = |name: &http::HeaderName| {
        let keep = !dropped(name);
        host |= keep && name == http::header::HOST;
        length |= keep && name == http::header::CONTENT_LENGTH;
        keep
    };
    let has_case = req.has_case();
    if has_case {
        for ((name, value), (case, _)) in req.headers.iter().zip(req.case_header_iter()) {
            if kept(name) {
                field(buf, case.as_slice(), value.as_bytes());
            }
        }
    } else {
        for (name, value) in req.headers.iter() {
            if kept(name) {
                field(buf, titled(name.as_str()).as_bytes(), value.as_bytes());
            }
        }
    }
    for (name, value) in added {
        let name = if has_case { name } else { titled(name) };
        field(buf, name.as_bytes(), value);
    }
    if !host {
        let authority = req.uri.authority().map_or("", |a| a.as_str());
        field(buf, b"Host", authority.as_bytes());
    }
    let framed = if has_body && !length {
        field(buf, b"Transfer-Encoding", b"chunked");
        Framed::Chunked
    } else {
        Framed::Length
    };
    buf.put_slice(b"\r\n");
    Ok(framed)
}

/// How Pingora writes a field name (lowercase) of a head that keeps no case on
/// HTTP/1: a few common names titled, every other one as it is. Pingora's own table
/// is private to it; `titled_names_are_pingoras` holds this one to it.
pub fn titled(name: &str) -> &str {
    match name {
        "accept-ranges" => "Accept-Ranges",
        "age" => "Age",
        "cache-control" => "Cache-Control",
        "connection" => "Connection",
        "content-encoding" => "Content-Encoding",
        "content-length" => "Content-Length",
        "content-type" => "Content-Type",
        "date" => "Date",
        "host" => "Host",
        "server" => "Server",
        "set-cookie" => "Set-Cookie",
        "transfer-encoding" => "Transfer-Encoding",
        other => other,
    }
}

/// One `name: value` line.
fn field(buf: &mut impl BufMut, name: &[u8], value: &[u8]) {
    buf.put_slice(name);
    buf.put_slice(b": ");
    buf.put_slice(value);
    buf.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_keeps_case_order_and_duplicates() {
        let mut req = RequestHeader::build("GET", b"/a?b=1", None).unwrap();
        req.append_header("Host", "example").unwrap();
        req.append_header("x-Mixed", "1").unwrap();
        req.append_header("X-MIXED", "2").unwrap();
        req.append_header("accept", "*/*").unwrap();
        let mut buf = Vec::new();
        encode(&req, &mut buf).unwrap();
        assert_eq!(
            buf,
            b"GET /a?b=1 HTTP/1.1\r\nHost: example\r\nx-Mixed: 1\r\nX-MIXED: 2\r\naccept: */*\r\n\r\n"
        );
    }

    #[test]
    fn titled_names_are_pingoras() {
        use http::header::*;
        let names = [
            ACCEPT,
            ACCEPT_CHARSET,
            ACCEPT_ENCODING,
            ACCEPT_LANGUAGE,
            ACCEPT_RANGES,
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            ACCESS_CONTROL_ALLOW_HEADERS,
            ACCESS_CONTROL_ALLOW_METHODS,
            ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_EXPOSE_HEADERS,
            ACCESS_CONTROL_MAX_AGE,
            ACCESS_CONTROL_REQUEST_HEADERS,
            ACCESS_CONTROL_REQUEST_METHOD,
            AGE,
            ALLOW,
            ALT_SVC,
            AUTHORIZATION,
            CACHE_CONTROL,
            CACHE_STATUS,
            CDN_CACHE_CONTROL,
            CONNECTION,
            CONTENT_DISPOSITION,
            CONTENT_ENCODING,
            CONTENT_LANGUAGE,
            CONTENT_LENGTH,
            CONTENT_LOCATION,
            CONTENT_RANGE,
            CONTENT_SECURITY_POLICY,
            CONTENT_SECURITY_POLICY_REPORT_ONLY,
            CONTENT_TYPE,
            COOKIE,
            DNT,
            DATE,
            ETAG,
            EXPECT,
            EXPIRES,
            FORWARDED,
            FROM,
            HOST,
            IF_MATCH,
            IF_MODIFIED_SINCE,
            IF_NONE_MATCH,
            IF_RANGE,
            IF_UNMODIFIED_SINCE,
            LAST_MODIFIED,
            LINK,
            LOCATION,
            MAX_FORWARDS,
            ORIGIN,
            PRAGMA,
            PROXY_AUTHENTICATE,
            PROXY_AUTHORIZATION,
            PUBLIC_KEY_PINS,
            PUBLIC_KEY_PINS_REPORT_ONLY,
            RANGE,
            REFERER,
            REFERRER_POLICY,
            REFRESH,
            RETRY_AFTER,
            SEC_WEBSOCKET_ACCEPT,
            SEC_WEBSOCKET_EXTENSIONS,
            SEC_WEBSOCKET_KEY,
            SEC_WEBSOCKET_PROTOCOL,
            SEC_WEBSOCKET_VERSION,
            SERVER,
            SET_COOKIE,
            STRICT_TRANSPORT_SECURITY,
            TE,
            TRAILER,
            TRANSFER_ENCODING,
            USER_AGENT,
            UPGRADE,
            UPGRADE_INSECURE_REQUESTS,
            VARY,
            VIA,
            WARNING,
            WWW_AUTHENTICATE,
            X_CONTENT_TYPE_OPTIONS,
            X_DNS_PREFETCH_CONTROL,
            X_FRAME_OPTIONS,
            X_XSS_PROTECTION,
        ];
        let custom = ["x-forwarded-for", "x-request-id", "forwarded-by", "a"];
        let all = names
            .iter()
            .cloned()
            .chain(custom.iter().map(|n| HeaderName::from_static(n)));
        for name in all {
            let mut req = RequestHeader::build_no_case("GET", b"/", None).unwrap();
            req.append_header(name.clone(), "v").unwrap();
            let mut wire = Vec::new();
            req.header_to_h1_wire(&mut wire);
            let expected = format!("{}: v\r\n", titled(name.as_str()));
            assert_eq!(String::from_utf8(wire).unwrap(), expected, "{name}");
        }
    }

    #[test]
    fn forbidden_target_bytes_are_refused() {
        for target in [&b"/a b"[..], b"/a\r\nX: y", b"/\0"] {
            // The URI parser may refuse it first; if it takes it, the encoder refuses.
            if let Ok(req) = RequestHeader::build("GET", target, None) {
                assert!(encode(&req, &mut Vec::new()).is_err());
            }
        }
    }
}
