//! Hop-by-hop request headers, removed before the filter chain runs so that headers
//! filters set are final.
//!
//! Pingora strips hop-by-hop headers, and every header the client's `Connection`
//! names, from the upstream copy of the request *after* `upstream_request_filter`,
//! that is after Sluice's filters have written their headers back: a client sending
//! `Connection: close, x-forwarded-by` removed an `x-forwarded-by` a filter had set.
//! [`plan`] decides, from the client's `Connection` values, what to remove before the
//! chain; the proxy applies it. What is left in `Connection` are the standard options
//! (`close`, `keep-alive`, `upgrade`), which Pingora still needs for the client
//! connection's keep-alive and for WebSocket upgrades, and which name only headers
//! that are hop-by-hop anyway.
//!
//! Refused, as Pingora refuses them (and as Envoy does): more than
//! [`MAX_NOMINATIONS`] options, options that are not an HTTP token, and options naming
//! pseudo-headers, `Host` or the `X-Forwarded-*` headers; also refused here: options
//! naming the framing headers (`Content-Length`, `Transfer-Encoding`), since removing
//! them before the body is read would change where the request ends.
//! No Pingora here.

use std::borrow::Cow;

/// Most `Connection` options accepted (Pingora's limit).
pub const MAX_NOMINATIONS: usize = 10;

/// Standard hop-by-hop request headers removed before the chain (RFC 9110 §7.6.1).
/// `Connection` is rewritten (see [`Plan::connection`]); `Upgrade` and
/// `Transfer-Encoding` stay for Pingora, which handles upgrades and body framing and
/// strips them from the upstream request itself.
pub const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "http2-settings",
];

/// What [`HOP_BY_HOP`] leaves for the HTTP layer and a message handed on drops: the
/// connection's `Connection` and `Upgrade`, and the framing field, set again for the
/// next hop.
pub const CONNECTION_FIELDS: &[&str] = &["connection", "upgrade", "transfer-encoding"];

/// Whether `name` (lower case) belongs to one hop and is never handed on: the standard
/// hop-by-hop headers and the connection fields.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name) || CONNECTION_FIELDS.contains(&name)
}

/// Removes from `req` every field whose (lower-case) name `drop` accepts, in one pass over
/// the names the head holds. A head holds a few fields: removing each candidate name in
/// turn would parse and hash every candidate, present or not (~200 instructions each,
/// ~18 per request on the request path, issue #18).
pub fn remove_where(req: &mut pingora::http::RequestHeader, drop: impl Fn(&str) -> bool) {
    let mut doomed: smallvec::SmallVec<[http::HeaderName; 4]> = smallvec::SmallVec::new();
    for name in req.headers.keys() {
        if drop(name.as_str()) && !doomed.contains(name) {
            doomed.push(name.clone());
        }
    }
    for name in &doomed {
        req.remove_header(name);
    }
}

/// `Connection` options that name standard behaviour and are kept for Pingora.
const STANDARD_OPTIONS: &[&str] = &["close", "keep-alive", "upgrade"];

/// Options a client may not nominate.
const PROTECTED: &[&str] = &[
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "content-length",
    "transfer-encoding",
];

/// Why a `Connection` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HopError {
    /// More than [`MAX_NOMINATIONS`] options.
    #[error("too many Connection options")]
    TooMany,
    /// An option that is not an HTTP token (RFC 9110 §5.6.2).
    #[error("invalid Connection option")]
    NotAToken,
    /// An option naming a header a client may not have removed.
    #[error("Connection names protected header {0}")]
    Protected(String),
}

/// What to do with a request's hop-by-hop headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Headers to remove (lower case): the standard hop-by-hop ones (borrowed, and held
    /// inline: no allocation per request) and those the client's `Connection` names.
    pub remove: smallvec::SmallVec<[Cow<'static, str>; 8]>,
    /// The `Connection` value to keep (its standard options), `None` to remove it.
    pub connection: Option<String>,
}

/// The plan for a request whose `Connection` header values are `values`.
pub fn plan<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Plan, HopError> {
    let mut plan = Plan {
        remove: HOP_BY_HOP.iter().map(|h| Cow::Borrowed(*h)).collect(),
        connection: None,
    };
    let mut kept: Vec<&str> = Vec::new();
    let mut count = 0;
    for value in values {
        for token in value
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
        {
            count += 1;
            if count > MAX_NOMINATIONS {
                return Err(HopError::TooMany);
            }
            if !token
                .iter()
                .copied()
                .all(crate::header_guard::is_token_byte)
            {
                return Err(HopError::NotAToken);
            }
            let name = String::from_utf8_lossy(token).to_ascii_lowercase();
            if PROTECTED.contains(&name.as_str()) {
                return Err(HopError::Protected(name));
            }
            if let Some(std) = STANDARD_OPTIONS.iter().find(|o| **o == name) {
                if !kept.contains(std) {
                    kept.push(std);
                }
            } else if !plan.remove.iter().any(|r| *r == name) {
                plan.remove.push(Cow::Owned(name));
            }
        }
    }
    if !kept.is_empty() {
        plan.connection = Some(kept.join(", "));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(values: &[&str]) -> Result<Plan, HopError> {
        plan(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn hop_by_hop_names_are_the_standard_ones_and_the_connection_fields() {
        for name in [
            "connection",
            "upgrade",
            "transfer-encoding",
            "keep-alive",
            "te",
            "trailer",
            "proxy-authorization",
            "proxy-authenticate",
            "proxy-connection",
            "http2-settings",
        ] {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in ["host", "content-length", "x-forwarded-for", "authorization"] {
            assert!(!is_hop_by_hop(name), "{name}");
        }
    }

    #[test]
    fn no_connection_header_removes_the_standard_ones() {
        let plan = p(&[]).unwrap();
        assert_eq!(plan.connection, None);
        assert!(plan.remove.iter().any(|h| h == "te"));
        assert!(plan.remove.iter().any(|h| h == "proxy-authorization"));
    }

    #[test]
    fn nominated_headers_are_removed_and_standard_options_kept() {
        let plan = p(&["close, X-Forwarded-By", "Keep-Alive ,x-other"]).unwrap();
        assert_eq!(plan.connection.as_deref(), Some("close, keep-alive"));
        assert!(plan.remove.iter().any(|h| h == "x-forwarded-by"));
        assert!(plan.remove.iter().any(|h| h == "x-other"));
        assert!(!plan.remove.iter().any(|h| h == "close"));
        let plan = p(&["Upgrade"]).unwrap();
        assert_eq!(plan.connection.as_deref(), Some("upgrade"));
        assert!(!plan.remove.iter().any(|h| h == "upgrade"));
    }

    #[test]
    fn protected_malformed_and_too_many_are_refused() {
        for h in [
            "host",
            "X-Forwarded-For",
            "content-length",
            "Transfer-Encoding",
        ] {
            assert_eq!(
                p(&[h]),
                Err(HopError::Protected(h.to_ascii_lowercase())),
                "{h}"
            );
        }
        assert_eq!(p(&["\"x-a\""]), Err(HopError::NotAToken));
        assert_eq!(p(&[":authority"]), Err(HopError::NotAToken));
        let many = (0..11)
            .map(|i| format!("x-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(p(&[many.as_str()]), Err(HopError::TooMany));
        let ten = (0..10)
            .map(|i| format!("x-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(p(&[ten.as_str()]).is_ok());
    }
}
