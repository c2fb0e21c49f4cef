//! `[server]`: listeners, the admin listener and its token, the access log, the
//! file watch and `x-forwarded-*` handling.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use toml::Spanned;

use super::errors::Lines;
use super::raw::RawServer;

/// Default traffic listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Default admin listener.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// Default of `[server] watch_debounce_ms`.
pub const DEFAULT_WATCH_DEBOUNCE_MS: u64 = 2000;

/// The `[server]` section's values.
pub(super) struct Server {
    pub(super) listen: Vec<SocketAddr>,
    pub(super) admin: Option<SocketAddr>,
    pub(super) threads: usize,
    pub(super) admin_token: Option<String>,
    pub(super) watch_debounce: std::time::Duration,
    pub(super) admin_hosts: Vec<String>,
    pub(super) forwarded: crate::forwarded::Config,
    pub(super) access_log: Option<String>,
}

/// Validates `[server]` (listeners, admin, token, access log, forwarding); `base` is
/// the policy's directory.
pub(super) fn parse_server(l: &mut Lines<'_>, base: &Path, server: &RawServer) -> Server {
    let mut listen = Vec::new();
    if server.listen.is_empty() {
        listen.push(DEFAULT_LISTEN.parse().expect("default address"));
    }
    for a in &server.listen {
        match resolve(a.get_ref()) {
            Ok(s) => listen.push(s),
            Err(e) => l.err(Some(a.span()), e),
        }
    }
    let admin = match &server.admin {
        Some(a) if a.get_ref().is_empty() || a.get_ref() == "off" => None,
        Some(a) => match resolve(a.get_ref()) {
            Ok(s) => Some(s),
            Err(e) => {
                l.err(Some(a.span()), e);
                None
            }
        },
        None => Some(DEFAULT_ADMIN.parse().expect("default address")),
    };
    let threads = server.threads.unwrap_or(2).clamp(1, 256);
    let mut admin_token = None;
    if let Some(var) = &server.admin_token_env {
        match std::env::var(var.get_ref()) {
            Ok(t) if !t.trim().is_empty() => admin_token = Some(t.trim().to_string()),
            _ => l.err(
                Some(var.span()),
                format!("admin token variable {} is not set", var.get_ref()),
            ),
        }
    }
    if let Some(file) = &server.admin_token_file {
        match std::fs::read_to_string(base.join(file.get_ref())) {
            Ok(t) if !t.trim().is_empty() => admin_token = Some(t.trim().to_string()),
            _ => l.err(
                Some(file.span()),
                format!("cannot read an admin token from {}", file.get_ref()),
            ),
        }
    }
    if admin.is_some_and(|a| !a.ip().is_loopback()) && admin_token.is_none() && l.out.is_empty() {
        l.err(
            server.admin.as_ref().map(|a| a.span()),
            "an admin listener off loopback needs admin_token_env or admin_token_file",
        );
    }
    let watch_debounce = parse_watch_debounce(l, server.watch_debounce_ms.as_ref());
    let admin_hosts = parse_admin_hosts(l, &server.admin_hosts);
    let forwarded = parse_forwarded(l, server);
    let access_log = match server.access_log.as_deref() {
        None | Some("off") | Some("") => None,
        Some("stdout") => Some("stdout".to_string()),
        Some(path) => Some(base.join(path).display().to_string()),
    };
    Server {
        listen,
        admin,
        threads,
        admin_token,
        watch_debounce,
        admin_hosts,
        forwarded,
        access_log,
    }
}

pub(super) fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {addr:?} resolves to nothing"))
}

fn parse_watch_debounce(l: &mut Lines<'_>, v: Option<&Spanned<u64>>) -> std::time::Duration {
    let ms = match v {
        None => DEFAULT_WATCH_DEBOUNCE_MS,
        Some(v) if (50..=600_000).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            l.err(
                Some(v.span()),
                "watch_debounce_ms must be between 50 and 600000",
            );
            DEFAULT_WATCH_DEBOUNCE_MS
        }
    };
    std::time::Duration::from_millis(ms)
}

fn parse_forwarded(l: &mut Lines<'_>, server: &RawServer) -> crate::forwarded::Config {
    use crate::forwarded::{Cidr, Config, Mode};
    let mode = match &server.forwarded {
        None => Mode::default(),
        Some(m) => Mode::parse(m.get_ref()).unwrap_or_else(|| {
            l.err(
                Some(m.span()),
                format!(
                    "forwarded: {:?} is not \"append\", \"replace\" or \"off\"",
                    m.get_ref()
                ),
            );
            Mode::default()
        }),
    };
    let mut trusted = Vec::new();
    for c in &server.trust_forwarded_from {
        match Cidr::parse(c.get_ref()) {
            Some(cidr) => trusted.push(cidr),
            None => l.err(
                Some(c.span()),
                format!(
                    "trust_forwarded_from: {:?} is not an address or a CIDR range",
                    c.get_ref()
                ),
            ),
        }
    }
    Config {
        mode,
        trusted,
        trust_request_id: server.trust_request_id,
    }
}

fn parse_admin_hosts(l: &mut Lines<'_>, hosts: &[Spanned<String>]) -> Vec<String> {
    let mut out = Vec::new();
    for h in hosts {
        let name = h.get_ref().trim().to_ascii_lowercase();
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if valid {
            out.push(name);
        } else {
            l.err(
                Some(h.span()),
                format!(
                    "admin_hosts: {:?} is not a host name (no port, no scheme)",
                    h.get_ref()
                ),
            );
        }
    }
    out
}
