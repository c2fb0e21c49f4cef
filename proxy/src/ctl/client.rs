//! The admin API as `sluice ctl` speaks to it: a blocking HTTP client with the bearer
//! token, and errors that say what is wrong (nothing listening, a refused token) and
//! what to do about it.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Where the token comes from when `--token-file` is not given.
pub const TOKEN_ENV: &str = "SLUICE_ADMIN_TOKEN";

/// Why a `sluice ctl` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Nothing answers at the admin address.
    #[error("no admin listener at {addr} ({reason}): is sluice running, and is this its [server] admin address? (--admin, or SLUICE_ADMIN)")]
    NoListener {
        /// The address tried.
        addr: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// 401: no token, or the wrong one.
    #[error("the admin API at {addr} refused the token ({}): set {TOKEN_ENV} or --token-file to the policy's admin token", if *.given { "the token given is wrong" } else { "none was given" })]
    Token {
        /// The address tried.
        addr: String,
        /// Whether a token was sent.
        given: bool,
    },
    /// Any other refusal or failure the admin API answered.
    #[error("{what}: the admin API answered {status}: {body}")]
    Refused {
        /// What was asked.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The errors or text it answered.
        body: String,
    },
    /// A transport or local error.
    #[error("{0}")]
    Other(String),
}

/// A client of one admin listener.
pub struct Client {
    base: String,
    addr: String,
    token: Option<String>,
    http: admin_http::blocking::Client,
}

/// The token: `--token-file` (trimmed), else `$SLUICE_ADMIN_TOKEN`, else none.
pub fn token(file: Option<&Path>) -> Result<Option<String>, CtlError> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f)
            .map_err(|e| CtlError::Other(format!("--token-file {}: {e}", f.display())))?;
        return Ok(Some(t.trim().to_string()).filter(|t| !t.is_empty()));
    }
    Ok(std::env::var(TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// The text of an error answer: its `errors` when JSON, else its body.
fn error_text(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) if v["errors"].is_array() => v["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                e.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string())
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => body.trim().to_string(),
    }
}

impl Client {
    /// A client of the admin listener at `admin` (`HOST:PORT` or `http://HOST:PORT`).
    pub fn new(admin: &str, token: Option<String>) -> Result<Client, CtlError> {
        let base = if admin.contains("://") {
            admin.trim_end_matches('/').to_string()
        } else {
            format!("http://{admin}")
        };
        if !base.starts_with("http://") {
            return Err(CtlError::Other(format!(
                "--admin {admin}: the admin listener speaks plain HTTP (http://HOST:PORT)"
            )));
        }
        // reqwest here has no TLS provider of its own (the admin listener is plain HTTP,
        // and the build carries ring's): it wants one installed all the same.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = admin_http::blocking::Client::builder()
            .no_proxy()
            .redirect(admin_http::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            // Long enough for a reload that compiles modules, and for a tail's wait.
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| CtlError::Other(e.to_string()))?;
        Ok(Client {
            addr: base.trim_start_matches("http://").to_string(),
            base,
            token,
            http,
        })
    }

    fn send(
        &self,
        what: &str,
        req: admin_http::blocking::RequestBuilder,
    ) -> Result<Value, CtlError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().map_err(|e| {
            if e.is_connect() {
                let mut reason = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    reason = s.to_string();
                    source = s.source();
                }
                CtlError::NoListener {
                    addr: self.addr.clone(),
                    reason,
                }
            } else {
                CtlError::Other(format!("{what}: {e}"))
            }
        })?;
        let status = resp.status();
        let body = resp
            .text()
            .map_err(|e| CtlError::Other(format!("{what}: {e}")))?;
        if status == admin_http::StatusCode::UNAUTHORIZED {
            return Err(CtlError::Token {
                addr: self.addr.clone(),
                given: self.token.is_some(),
            });
        }
        if !status.is_success() {
            return Err(CtlError::Refused {
                what: what.to_string(),
                status: status.as_u16(),
                body: error_text(&body),
            });
        }
        serde_json::from_str(&body)
            .map_err(|e| CtlError::Other(format!("{what}: not JSON ({e}): {body}")))
    }

    /// `GET path` as JSON.
    pub fn get(&self, path: &str) -> Result<Value, CtlError> {
        self.send(
            &format!("GET {path}"),
            self.http.get(format!("{}{path}", self.base)),
        )
    }

    /// `POST path` (no body) as JSON.
    pub fn post(&self, path: &str) -> Result<Value, CtlError> {
        self.send(
            &format!("POST {path}"),
            self.http.post(format!("{}{path}", self.base)),
        )
    }
}
