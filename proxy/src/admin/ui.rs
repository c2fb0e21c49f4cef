//! `/ui`: the status page, served from the binary (HTML, one script, one style sheet,
//! all `include_str!`; nothing from another origin). The script reads `/admin/status`
//! every [`REFRESH_MS`] and draws generations (with a rollback button), each route's
//! chain with per-filter latency and failures, the WAF's top rules and blocked requests
//! over the last minutes, pools with peer health and the image cache's hit rate.
//!
//! The same admission rules as the rest of the admin API apply (token or loopback
//! `Host`; the rollback button's `POST` passes the cross-origin checks because the page
//! is same-origin). A browser cannot send a bearer token on a page load, so with a token
//! configured `/ui` answers a login form instead of a 401: `POST /ui/login` with the
//! token (JSON, same-origin: the cross-origin checks apply) sets a session cookie
//! (`HttpOnly`, `SameSite=Strict`, 12 hours) whose value is its expiry and an
//! HMAC-SHA256 of it keyed by the token, which the admin API then takes in place of the
//! bearer token until it expires. A strict `Content-Security-Policy`
//! allows only this origin's script and style, and `frame-ancestors 'none'` keeps the
//! rollback button out of other sites' frames (clickjacking).

use http::{Response, StatusCode};
use pingora::protocols::http::ServerSession;

use super::guard;

/// How often the page reads the status again, milliseconds.
pub const REFRESH_MS: u64 = 2000;

const HTML: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");
const LOGIN_HTML: &str = include_str!("ui/login.html");
const LOGIN_SCRIPT: &str = include_str!("ui/login.js");

/// Most bytes of a login request's body.
const LOGIN_MAX: usize = 4096;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &str, body: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .header("content-security-policy", CSP)
        .header("x-frame-options", "DENY")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .body(body.as_bytes().to_vec())
        .expect("static response parts are valid")
}

/// The page, its script or its style sheet, by path (`/ui`, `/ui/app.js`,
/// `/ui/style.css`); `None` for another path.
pub fn serve(path: &str) -> Option<Response<Vec<u8>>> {
    match path {
        "/ui" | "/ui/" => Some(asset(
            "text/html; charset=utf-8",
            &HTML.replace("{{REFRESH_MS}}", &REFRESH_MS.to_string()),
        )),
        "/ui/app.js" => Some(asset("text/javascript; charset=utf-8", SCRIPT)),
        "/ui/style.css" => Some(asset("text/css; charset=utf-8", STYLE)),
        "/ui/login.js" => Some(asset("text/javascript; charset=utf-8", LOGIN_SCRIPT)),
        _ => None,
    }
}

/// Paths open without the token when one is configured: the login and the static files
/// its form uses (the host and cross-origin checks still apply).
pub fn open_without_token(path: &str) -> bool {
    matches!(path, "/ui/login" | "/ui/login.js" | "/ui/style.css")
}

/// The login form (`/ui` without a session, when the admin API has a token).
pub fn login_page() -> Response<Vec<u8>> {
    asset("text/html; charset=utf-8", LOGIN_HTML)
}

fn status_only(status: StatusCode, text: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .header(http::header::CONTENT_LENGTH, text.len())
        .body(text.as_bytes().to_vec())
        .expect("static response parts are valid")
}

/// `POST /ui/login` with `{"token": "..."}`: the session cookie when the token is the
/// admin API's, 401 otherwise (counted as a token refusal).
pub async fn login(session: &mut ServerSession, token: Option<&str>) -> Response<Vec<u8>> {
    let Some(token) = token else {
        return status_only(
            StatusCode::NOT_FOUND,
            "no admin token is configured: no login\n",
        );
    };
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = session.read_request_body().await {
        body.extend_from_slice(&chunk);
        if body.len() > LOGIN_MAX {
            return status_only(StatusCode::PAYLOAD_TOO_LARGE, "too large\n");
        }
    }
    let given = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_string));
    if !guard::token_matches(given.as_deref(), token) {
        return super::refuse(guard::AdminRefusal::Token);
    }
    let cookie = format!(
        "{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict",
        guard::SESSION_COOKIE,
        guard::session_value(token),
        guard::SESSION_TTL_SECS
    );
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(http::header::SET_COOKIE, cookie)
        .header(http::header::CACHE_CONTROL, "no-store")
        .header(http::header::CONTENT_LENGTH, 0)
        .body(Vec::new())
        .expect("static response parts are valid")
}
