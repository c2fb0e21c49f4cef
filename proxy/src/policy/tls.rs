//! `[tls]`: TLS listeners and certificates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::errors::Lines;
use super::raw::RawTls;
use super::server::resolve;

/// One certificate of the TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertDef {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
    /// Names served; the certificate's DNS names when empty.
    pub names: Vec<String>,
    /// Line of the entry.
    pub line: usize,
}

/// TLS termination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsDef {
    /// TLS listeners.
    pub listen: Vec<SocketAddr>,
    /// Offer HTTP/2 with ALPN (h2, then http/1.1).
    pub h2: bool,
    /// Certificates chosen by SNI; the first one also answers clients without SNI or
    /// with an unknown name.
    pub certificates: Vec<CertDef>,
}

pub(super) fn parse_tls(l: &mut Lines<'_>, base: &Path, t: &RawTls) -> TlsDef {
    let mut listen = Vec::new();
    for a in &t.listen {
        match resolve(a.get_ref()) {
            Ok(s) => listen.push(s),
            Err(e) => l.err(Some(a.span()), format!("[tls] {e}")),
        }
    }
    if t.listen.is_empty() {
        l.err(None, "[tls] listen is empty");
    }
    if t.certificates.is_empty() {
        l.err(None, "[tls] needs at least one [[tls.certificates]]");
    }
    let certificates = t
        .certificates
        .iter()
        .map(|c| CertDef {
            cert: base.join(&c.get_ref().cert),
            key: base.join(&c.get_ref().key),
            names: c
                .get_ref()
                .names
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            line: l.line_of(c.span().start),
        })
        .collect();
    TlsDef {
        listen,
        h2: t.h2,
        certificates,
    }
}
