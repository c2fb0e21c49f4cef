//! Who may talk to the admin API: checks against DNS rebinding (the `Host` a browser
//! sends names the attacker's domain) and cross-site request forgery (a page on another
//! origin makes the browser send a state-changing request), and the bearer token
//! compared in constant time.
//!
//! The rules, modelled on Go's `net/http.CrossOriginProtection` and on the way Envoy,
//! Consul and Prometheus keep state changes off simple requests:
//! - `Host` (checked when no token is configured; the token is what guards an admin API
//!   that has one, and a rebinding page cannot present it) must be an IP literal,
//!   `localhost` or a `*.localhost` name, or a name listed in `[server] admin_hosts`.
//!   A request without `Host` (HTTP/1.0 tools) passes: browsers always send one.
//! - A state-changing request (any method but GET, HEAD, OPTIONS) is refused when
//!   `Sec-Fetch-Site` says another site or origin sent it, when `Origin` is present and
//!   is not the `Host` it was sent to (`Origin: null` included), and when its
//!   `Content-Type` is one an HTML form can send without a CORS preflight
//!   (`application/x-www-form-urlencoded`, `multipart/form-data`, `text/plain`). The
//!   admin API answers no CORS preflight, so no other cross-origin request gets through.
//!   `curl -X POST` sends neither `Origin` nor a body type and passes.

use http::{header, HeaderMap, Method};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why the admin API refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRefusal {
    /// `Host` names neither the admin's address nor an allowed name (DNS rebinding).
    Host,
    /// `Origin` or `Sec-Fetch-Site` says another origin sent a state-changing request.
    Origin,
    /// A state-changing request with a body type a cross-origin form can send.
    ContentType,
    /// Missing or wrong bearer token.
    Token,
}

impl AdminRefusal {
    /// The `reason` label of `sluice_admin_refusals_total`.
    pub fn label(self) -> &'static str {
        match self {
            AdminRefusal::Host => "host",
            AdminRefusal::Origin => "origin",
            AdminRefusal::ContentType => "content_type",
            AdminRefusal::Token => "token",
        }
    }

    /// The body of the refusal.
    pub fn message(self) -> &'static str {
        match self {
            AdminRefusal::Host => {
                "Host is not this admin listener (add the name to [server] admin_hosts)\n"
            }
            AdminRefusal::Origin => "cross-origin requests cannot change state\n",
            AdminRefusal::ContentType => {
                "state-changing requests cannot carry a form content type\n"
            }
            AdminRefusal::Token => "bearer token required\n",
        }
    }
}

/// True for methods that may change state.
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Checks `Host` against DNS rebinding: IP literals, `localhost`, `*.localhost` and the
/// names in `allowed` pass.
pub fn check_host(headers: &HeaderMap, allowed: &[String]) -> Result<(), AdminRefusal> {
    let Some(value) = headers.get(header::HOST) else {
        return Ok(());
    };
    let value = value.to_str().map_err(|_| AdminRefusal::Host)?;
    let name = crate::paths::normalize_host(value.trim());
    let ok = name.parse::<std::net::IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || allowed.iter().any(|a| *a == *name);
    if ok {
        Ok(())
    } else {
        Err(AdminRefusal::Host)
    }
}

/// `host[:port]` lower case, without the default port of `scheme`.
fn normal_authority(authority: &str, scheme: &str) -> String {
    let a = authority.trim().trim_end_matches('/').to_ascii_lowercase();
    let default = if scheme == "https" { ":443" } else { ":80" };
    a.strip_suffix(default).map(str::to_string).unwrap_or(a)
}

/// Checks a state-changing request against cross-site request forgery.
pub fn check_cross_origin(headers: &HeaderMap) -> Result<(), AdminRefusal> {
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Err(AdminRefusal::Origin);
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().map_err(|_| AdminRefusal::Origin)?;
        let (scheme, authority) = origin.split_once("://").ok_or(AdminRefusal::Origin)?;
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or(AdminRefusal::Origin)?;
        if scheme != "http" || normal_authority(authority, scheme) != normal_authority(host, "http")
        {
            return Err(AdminRefusal::Origin);
        }
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let essence = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if matches!(
            essence.as_str(),
            "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
        ) {
            return Err(AdminRefusal::ContentType);
        }
    }
    Ok(())
}

/// The status page's session cookie (set by `POST /ui/login`).
pub const SESSION_COOKIE: &str = "sluice_session";

/// How long a status-page session lasts (then the page asks for the token again).
pub const SESSION_TTL_SECS: u64 = 12 * 3600;

/// The MAC of a session expiring at `expires` (Unix seconds), keyed by the token.
fn session_mac(token: &str, expires: u64) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes())
        .expect("HMAC takes keys of any length");
    m.update(b"sluice-ui-session\0");
    m.update(expires.to_string().as_bytes());
    m.finalize().into_bytes().into()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A session cookie's value for `token`, valid for [`SESSION_TTL_SECS`]:
/// `EXPIRES.MAC`, the MAC an HMAC-SHA256 keyed by the token. The browser never holds the
/// token itself (a cookie leaked from a browser does not open the token's other uses,
/// e.g. `sluice ctl` or Prometheus), a leaked cookie stops working when it expires, and
/// changing the token ends every session.
pub fn session_value(token: &str) -> String {
    let expires = unix_now() + SESSION_TTL_SECS;
    format!("{expires}.{}", hex::encode(session_mac(token, expires)))
}

/// The session cookie a request carries, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
}

/// Whether a session cookie value was made for `token` and has not expired (the MAC
/// compared in constant time).
pub fn session_matches(given: Option<&str>, token: &str) -> bool {
    session_valid_at(given, token, unix_now())
}

fn session_valid_at(given: Option<&str>, token: &str, now: u64) -> bool {
    let Some((expires, mac)) = given.and_then(|g| g.split_once('.')) else {
        return false;
    };
    let (Ok(expires), Ok(mac)) = (expires.parse::<u64>(), hex::decode(mac)) else {
        return false;
    };
    if token.is_empty() || expires <= now || expires > now + SESSION_TTL_SECS {
        return false;
    }
    let equal: bool = mac.as_slice().ct_eq(&session_mac(token, expires)).into();
    equal
}

/// Compares a presented bearer token with the configured one in constant time: both
/// are hashed (SHA-256) first, so neither the content nor the length of the token
/// shows in the time the comparison takes.
pub fn token_matches(given: Option<&str>, token: &str) -> bool {
    let given = Sha256::digest(given.unwrap_or("").trim().as_bytes());
    let want = Sha256::digest(token.as_bytes());
    let equal: bool = given.as_slice().ct_eq(want.as_slice()).into();
    // An empty configured token (the policy refuses one) would match nothing given.
    equal && !token.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn host_allows_loopback_names_and_ip_literals_only() {
        let none: Vec<String> = vec![];
        for ok in [
            "127.0.0.1:9901",
            "[::1]:9901",
            "localhost:9901",
            "LOCALHOST",
            "a.localhost",
            "10.0.0.7",
        ] {
            assert_eq!(check_host(&headers(&[("host", ok)]), &none), Ok(()), "{ok}");
        }
        for bad in [
            "evil.example:9901",
            "evil.example",
            "127.0.0.1.nip.io:9901",
            "localhost.evil.example",
        ] {
            assert_eq!(
                check_host(&headers(&[("host", bad)]), &none),
                Err(AdminRefusal::Host),
                "{bad}"
            );
        }
        let allowed = vec!["sluice-admin".to_string()];
        assert_eq!(
            check_host(&headers(&[("host", "sluice-admin:9901")]), &allowed),
            Ok(())
        );
        assert_eq!(
            check_host(&HeaderMap::new(), &none),
            Ok(()),
            "HTTP/1.0 without Host"
        );
    }

    #[test]
    fn state_changes_need_the_same_origin_and_no_form_content_type() {
        assert_eq!(
            check_cross_origin(&headers(&[("host", "127.0.0.1:9901")])),
            Ok(())
        );
        assert_eq!(
            check_cross_origin(&headers(&[
                ("host", "127.0.0.1:9901"),
                ("origin", "http://127.0.0.1:9901")
            ])),
            Ok(())
        );
        assert_eq!(
            check_cross_origin(&headers(&[
                ("host", "localhost"),
                ("origin", "http://localhost:80")
            ])),
            Ok(())
        );
        for origin in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:3000",
            "https://127.0.0.1:9901",
        ] {
            assert_eq!(
                check_cross_origin(&headers(&[("host", "127.0.0.1:9901"), ("origin", origin)])),
                Err(AdminRefusal::Origin),
                "{origin}"
            );
        }
        assert_eq!(
            check_cross_origin(&headers(&[
                ("host", "127.0.0.1:9901"),
                ("sec-fetch-site", "same-site")
            ])),
            Err(AdminRefusal::Origin)
        );
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert_eq!(
                check_cross_origin(&headers(&[
                    ("host", "127.0.0.1:9901"),
                    ("content-type", ct)
                ])),
                Err(AdminRefusal::ContentType),
                "{ct}"
            );
        }
        assert_eq!(
            check_cross_origin(&headers(&[("content-type", "application/json")])),
            Ok(())
        );
    }

    #[test]
    fn sessions_are_a_hash_of_the_token_read_from_the_cookie_header() {
        let v = session_value("s3cret");
        assert_ne!(v, "s3cret");
        let h = headers(&[("cookie", &format!("a=b; {SESSION_COOKIE}={v}; c=d"))]);
        assert_eq!(session_cookie(&h), Some(v.as_str()));
        assert!(session_matches(session_cookie(&h), "s3cret"));
        assert!(
            !session_matches(Some("s3cret"), "s3cret"),
            "the token itself is no session"
        );
        assert!(!session_matches(session_cookie(&h), "other"));
        // Sessions expire; a forged expiry breaks the MAC; garbage is refused.
        let (exp, mac) = v.split_once('.').unwrap();
        let exp: u64 = exp.parse().unwrap();
        assert!(session_valid_at(Some(&v), "s3cret", exp - 1));
        assert!(!session_valid_at(Some(&v), "s3cret", exp));
        let later = format!("{}.{mac}", exp + 3600);
        assert!(!session_matches(Some(&later), "s3cret"), "a moved expiry");
        for junk in ["", ".", "1.zz", "x.00", "99999999999999999999.00"] {
            assert!(!session_matches(Some(junk), "s3cret"), "{junk:?}");
        }
        assert!(!session_matches(None, "s3cret"));
        assert_eq!(session_cookie(&headers(&[("cookie", "a=b")])), None);
    }

    #[test]
    fn tokens_match_exactly() {
        assert!(token_matches(Some("s3cret"), "s3cret"));
        assert!(token_matches(Some(" s3cret "), "s3cret"));
        assert!(!token_matches(Some("s3cre"), "s3cret"));
        assert!(!token_matches(Some("s3cretX"), "s3cret"));
        assert!(!token_matches(None, "s3cret"));
        assert!(!token_matches(None, ""));
    }
}
