//! `/ui`: the status page, served from the binary (HTML, one script, one style sheet,
//! all `include_str!`; nothing from another origin). The script reads `/admin/status`
//! every [`REFRESH_MS`] and draws generations (with a rollback button), each route's
//! chain with per-filter latency and failures, the WAF's top rules and blocked requests
//! over the last minutes, pools with peer health and the image cache's hit rate.
//!
//! The same admission rules as the rest of the admin API apply (token or loopback
//! `Host`; the rollback button's `POST` passes the cross-origin checks because the page
//! is same-origin). A strict `Content-Security-Policy` allows only this origin's
//! script and style, and `frame-ancestors 'none'` keeps the rollback button out of
//! other sites' frames (clickjacking).

use http::{Response, StatusCode};

/// How often the page reads the status again, milliseconds.
pub const REFRESH_MS: u64 = 2000;

const HTML: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

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
        _ => None,
    }
}
