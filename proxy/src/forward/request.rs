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

/// The fields of the client's head never forwarded as they are: the hop-by-hop ones
/// ([`upstream_head`] removes them) and `x-sluice-debug` (`upstream_request_filter`).
/// The HTTP/1 client leaves them out when it writes the head with no copy
/// ([`super::h1::Client::write_forwarded_head`]).
pub fn dropped(name: &http::HeaderName) -> bool {
    crate::hop::is_hop_by_hop(name.as_str()) || crate::proxy::is_debug_header(name)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::h1::request_head::{encode, encode_forwarded, Framed};
    use crate::forwarded::{Added, Cidr, Config, Mode};

    /// The head the slow path sends: a copy, hop-by-hop and debug fields removed, the
    /// request metadata written, framed, encoded.
    fn copied(
        req: &RequestHeader,
        has_body: bool,
        added: Option<&(String, Added)>,
    ) -> (Vec<u8>, Framed) {
        let mut up = upstream_head(req, false);
        up.remove_header(crate::proxy::DEBUG_HEADER);
        if let Some((id, a)) = added {
            a.apply(&mut up, id).unwrap();
        }
        frame(&mut up, has_body, false, false).unwrap();
        let mut buf = Vec::new();
        encode(&up, &mut buf).unwrap();
        let chunked = up.headers.contains_key(http::header::TRANSFER_ENCODING);
        (
            buf,
            if chunked {
                Framed::Chunked
            } else {
                Framed::Length
            },
        )
    }

    fn head(version: http::Version, target: &[u8], fields: &[(&str, &str)]) -> RequestHeader {
        let mut req = if version == http::Version::HTTP_2 {
            // As Pingora reads a head from HTTP/2: no field-name case.
            RequestHeader::build_no_case("POST", target, None).unwrap()
        } else {
            RequestHeader::build("POST", target, None).unwrap()
        };
        req.set_version(version);
        for (k, v) in fields {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    #[test]
    fn the_forwarded_head_is_the_copy_the_slow_path_sends() {
        let heads = [
            head(
                http::Version::HTTP_11,
                b"/a?b=1",
                &[("Host", "example"), ("Accept", "*/*")],
            ),
            // No Host: the target's authority, or empty.
            head(
                http::Version::HTTP_10,
                b"/x",
                &[("x-Mixed", "1"), ("X-MIXED", "2")],
            ),
            head(
                http::Version::HTTP_11,
                b"http://origin.test:8080/p",
                &[("a", "1")],
            ),
            // Hop-by-hop fields, the connection fields and the debug question dropped,
            // wherever they are and whatever their case.
            head(
                http::Version::HTTP_11,
                b"/",
                &[
                    ("Connection", "close"),
                    ("KEEP-ALIVE", "timeout=5"),
                    ("host", "h"),
                    ("Transfer-Encoding", "chunked"),
                    ("te", "trailers"),
                    ("X-Sluice-Debug", "1"),
                    ("Upgrade", "websocket"),
                    ("Proxy-Authorization", "x"),
                    ("trailer", "x"),
                    ("x-after", "kept"),
                ],
            ),
            head(
                http::Version::HTTP_11,
                b"/",
                &[("Content-Length", "3"), ("host", "h")],
            ),
            // A client's own metadata: replaced, kept or extended as the policy says.
            head(
                http::Version::HTTP_11,
                b"/m",
                &[
                    ("X-Forwarded-For", "203.0.113.7"),
                    ("host", "h"),
                    ("x-request-id", "forged-by-the-client"),
                    ("X-Forwarded-Proto", "https"),
                    ("x-after", "kept"),
                ],
            ),
            // Heads read from HTTP/2 (no case; the authority in the target, no Host):
            // names Pingora titles, others lowercase, the metadata, framing.
            head(
                http::Version::HTTP_2,
                b"https://h2.test/p?q=1",
                &[
                    ("content-type", "text/plain"),
                    ("accept", "*/*"),
                    ("cookie", "a=1"),
                    ("cookie", "b=2"),
                    ("x-forwarded-for", "203.0.113.7"),
                    ("x-request-id", "forged-by-the-client"),
                    ("te", "trailers"),
                    ("x-sluice-debug", "1"),
                    ("date", "x"),
                    ("x-after", "kept"),
                ],
            ),
            head(
                http::Version::HTTP_2,
                b"/rel",
                &[("host", "h"), ("content-length", "3"), ("server", "s")],
            ),
        ];
        let configs = [
            None,
            Some(Config::default()),
            Some(Config {
                mode: Mode::Replace,
                trust_request_id: true,
                ..Config::default()
            }),
            Some(Config {
                mode: Mode::Append,
                trusted: vec![Cidr::parse("192.0.2.0/24").unwrap()],
                ..Config::default()
            }),
            Some(Config {
                mode: Mode::Off,
                ..Config::default()
            }),
        ];
        let client = Some("192.0.2.9".parse().unwrap());
        for (req, cfg) in heads
            .iter()
            .flat_map(|h| configs.iter().map(move |c| (h, c)))
        {
            let added = cfg
                .as_ref()
                .map(|c| crate::forwarded::decide(req, c, client, false).unwrap());
            let added = added.as_ref();
            for has_body in [false, true] {
                let mut fast = Vec::new();
                let drop =
                    |n: &http::HeaderName| dropped(n) || added.is_some_and(|(_, a)| a.replaces(n));
                let fields = added.into_iter().flat_map(|(id, a)| a.fields(id));
                let framed = encode_forwarded(req, has_body, drop, fields, &mut fast).unwrap();
                let (slow, slow_framed) = copied(req, has_body, added);
                let (fast, slow) = (
                    String::from_utf8(fast).unwrap(),
                    String::from_utf8(slow).unwrap(),
                );
                let dropping = req
                    .headers
                    .keys()
                    .any(|n| dropped(n) || added.is_some_and(|(_, a)| a.replaces(n)));
                if dropping {
                    // The copy's removals may reorder the fields left (`http::HeaderMap`
                    // moves its last entry into a removed one's place); the forwarded
                    // head keeps the client's order. The same lines either way.
                    let lines = |s: &str| {
                        let mut l: Vec<String> = s.split("\r\n").map(str::to_string).collect();
                        l[1..].sort();
                        l
                    };
                    assert_eq!(lines(&fast), lines(&slow), "has_body {has_body}");
                    if let (Some(h), Some(a)) = (fast.find("host: h"), fast.find("x-after")) {
                        assert!(h < a, "the client's order is kept");
                    }
                } else {
                    assert_eq!(fast, slow, "has_body {has_body}");
                }
                assert_eq!(framed, slow_framed);
            }
        }
    }

    #[test]
    fn a_target_that_splits_the_request_line_is_refused() {
        for target in [&b"/a b"[..], b"/a\r\nX: y", b"/\0"] {
            // The URI parser may refuse it first; if it takes it, the encoder refuses.
            if let Ok(req) = RequestHeader::build("GET", target, None) {
                assert!(encode_forwarded(
                    &req,
                    false,
                    dropped,
                    std::iter::empty(),
                    &mut Vec::new()
                )
                .is_err());
            }
        }
    }
}
