//! The request as Sluice routes it: made canonical before routing and before any
//! filter runs. Applies [`crate::paths`] (the target: path, absolute form) and
//! [`crate::hop`] (hop-by-hop headers) to Pingora's request header, so that the path
//! the route matched is the one filters see and the origin receives, and headers
//! filters set are not removed after them.

use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
use pingora::http::RequestHeader;

use crate::hop::{self, HopError};
use crate::paths::{self, PathError, PathsConfig};

/// Why a request was refused before routing (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngressRefusal {
    /// The path.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The `Connection` header.
    #[error(transparent)]
    Connection(#[from] HopError),
    /// The normalised target is not a valid URI.
    #[error("request target cannot be rebuilt")]
    Target,
    /// A `Host` header that names no host (empty, or bytes no host name or address has).
    #[error("invalid Host header")]
    Host,
}

impl IngressRefusal {
    /// The metric label of this refusal (`sluice_bad_requests_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            IngressRefusal::Path(e) => e.reason(),
            IngressRefusal::Connection(_) => "connection_header",
            IngressRefusal::Target => "target",
            IngressRefusal::Host => "host",
        }
    }
}

/// Normalises the request target and removes hop-by-hop headers, in place. A path
/// `[paths]` refuses, or a `Host` naming no host, leaves the target as sent but still
/// has the hop-by-hop headers removed, so that the route's filters may judge the
/// request before it is refused (see the caller).
pub fn prepare(req: &mut RequestHeader, cfg: &PathsConfig) -> Result<(), IngressRefusal> {
    let host = check_host(req);
    let target = normalize_target(req, cfg);
    // HTTP/2 has no connection-specific headers (RFC 9113 §8.2.2); `te: trailers` is
    // legal there and gRPC needs it.
    if req.version != http::Version::HTTP_2 {
        strip_hop_by_hop(req)?;
    }
    host.and(target)
}

/// A `Host` header, when there is one, must name a host: a DNS name or IPv4 address
/// (letters, digits, `-`, `.`, `_`) or a bracketed IPv6 literal, then an optional port.
/// An empty one, or one with other bytes (`%`, `/`, `@`, spaces, controls), is refused
/// with 400, as nginx refuses an empty one: routes and certificates are chosen by host,
/// and a host no name can spell would only reach a default route. A missing `Host`
/// (HTTP/1.0) is taken and left to the filters (the WAF judges it).
fn check_host(req: &RequestHeader) -> Result<(), IngressRefusal> {
    match req.headers.get(http::header::HOST) {
        Some(v) if !paths::is_host_port(v.as_bytes(), false) => Err(IngressRefusal::Host),
        _ => Ok(()),
    }
}

/// The target as sent when it is absolute-form (`http://host/path?q`), before
/// [`prepare`] makes it origin-form.
pub fn absolute_target(req: &RequestHeader) -> Option<Vec<u8>> {
    let raw = req.raw_path();
    match raw_target_authority(raw) {
        RawTargetAuthority::Absolute { .. } => Some(raw.to_vec()),
        _ => None,
    }
}

/// Rewrites the target to its canonical origin-form (absolute-form becomes
/// origin-form plus `Host`); the query is kept byte for byte. Absolute-form is told
/// apart with Pingora's own classifier, the one its authority checks use.
fn normalize_target(req: &mut RequestHeader, cfg: &PathsConfig) -> Result<(), IngressRefusal> {
    let raw = req.raw_path();
    let (authority, path_and_query) = match raw_target_authority(raw) {
        RawTargetAuthority::Absolute {
            authority,
            path_and_query,
            ..
        } => (Some(authority), path_and_query),
        // Origin-form; asterisk-form, CONNECT and opaque targets are left to Pingora.
        _ if raw.first() == Some(&b'/') => (None, raw),
        _ => return Ok(()),
    };
    let (path, query) = paths::split_query(path_and_query);
    let path: &[u8] = if path.is_empty() { b"/" } else { path };
    let normalized = paths::normalize_path(path, cfg)?;
    if authority.is_none() && normalized.is_none() {
        return Ok(());
    }
    let authority = authority.map(<[u8]>::to_vec);
    let path = normalized.map_or_else(|| path.to_vec(), String::into_bytes);
    let query = query.to_vec();
    // Absolute-form: Pingora checked that a Host header, if any, equals the authority.
    if let Some(authority) = authority {
        if !req.headers.contains_key(http::header::HOST) {
            req.insert_header(http::header::HOST, authority)
                .map_err(|_| IngressRefusal::Target)?;
        }
    }
    set_path(req, &path, query)
}

/// Sets the path and query, keeping the URI's scheme and authority (HTTP/2 requests
/// carry them).
fn set_path(
    req: &mut RequestHeader,
    path: &[u8],
    mut query: Vec<u8>,
) -> Result<(), IngressRefusal> {
    let mut pq = path.to_vec();
    pq.append(&mut query);
    let mut parts = http::uri::Parts::default();
    parts.scheme = req.uri.scheme().cloned();
    parts.authority = req.uri.authority().cloned();
    parts.path_and_query =
        Some(http::uri::PathAndQuery::try_from(pq).map_err(|_| IngressRefusal::Target)?);
    let uri = http::Uri::from_parts(parts).map_err(|_| IngressRefusal::Target)?;
    req.set_uri(uri);
    Ok(())
}

/// Removes the standard hop-by-hop headers and those the client's `Connection` names;
/// `Connection` keeps only its standard options.
fn strip_hop_by_hop(req: &mut RequestHeader) -> Result<(), IngressRefusal> {
    let plan = hop::plan(
        req.headers
            .get_all(http::header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    )?;
    let keep_connection = plan.connection.is_some();
    hop::remove_where(req, |name| {
        (name == "connection" && !keep_connection) || plan.remove.iter().any(|r| r == name)
    });
    if let Some(v) = plan.connection {
        req.insert_header(http::header::CONNECTION, v)
            .map_err(|_| IngressRefusal::Target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn absolute_target_is_kept_as_sent() {
        let r = req("http://h:8080/a/../b?q=%2e", &[]);
        assert_eq!(
            absolute_target(&r).as_deref(),
            Some(&b"http://h:8080/a/../b?q=%2e"[..])
        );
        assert_eq!(absolute_target(&req("/a?q", &[("host", "h")])), None);
    }

    #[test]
    fn origin_form_is_normalised_and_the_query_kept() {
        let mut r = req("/x/../%65cho?a=%2e%2e/../b", &[("host", "h")]);
        prepare(&mut r, &PathsConfig::default()).unwrap();
        assert_eq!(r.raw_path(), b"/echo?a=%2e%2e/../b");
        assert_eq!(r.uri.path(), "/echo");
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_host() {
        let mut r = req("http://Example.com:8080//echo?q=1", &[]);
        prepare(&mut r, &PathsConfig::default()).unwrap();
        assert_eq!(r.raw_path(), b"/echo?q=1");
        assert_eq!(r.headers["host"], "Example.com:8080");
    }

    #[test]
    fn refusals_name_their_reason() {
        let mut r = req("/a%2Fb", &[]);
        let e = prepare(&mut r, &PathsConfig::default()).unwrap_err();
        assert_eq!(e.reason(), "encoded_slash");
        let mut r = req("/a", &[("connection", "host")]);
        let e = prepare(&mut r, &PathsConfig::default()).unwrap_err();
        assert_eq!(e.reason(), "connection_header");
    }

    #[test]
    fn hosts_must_name_a_host() {
        for ok in [
            "h",
            "Example.COM:8080",
            "a_b.example.",
            "127.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
        ] {
            let mut r = req("/", &[("host", ok)]);
            assert!(prepare(&mut r, &PathsConfig::default()).is_ok(), "{ok}");
        }
        assert!(prepare(&mut req("/", &[]), &PathsConfig::default()).is_ok());
        for bad in [
            "",
            "localhost%00",
            "a/b",
            "user@h",
            "h:80x",
            "h:123456",
            "[]",
            "[::1",
            "a b",
        ] {
            let mut r = req("/", &[("host", bad)]);
            let e = prepare(&mut r, &PathsConfig::default()).unwrap_err();
            assert_eq!(e.reason(), "host", "{bad:?}");
        }
    }

    #[test]
    fn nominated_and_hop_by_hop_headers_go_before_the_chain() {
        let mut r = req(
            "/echo",
            &[
                ("connection", "close, x-forwarded-by"),
                ("x-forwarded-by", "client"),
                ("te", "trailers"),
                ("x-keep", "1"),
            ],
        );
        prepare(&mut r, &PathsConfig::default()).unwrap();
        assert!(r.headers.get("x-forwarded-by").is_none());
        assert!(r.headers.get("te").is_none());
        assert_eq!(r.headers["connection"], "close");
        assert_eq!(r.headers["x-keep"], "1");
    }
}
