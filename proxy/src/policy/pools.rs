//! `[pools.*]`: upstream peers, balancing, TLS to the upstream, health checks and
//! passive ejection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::errors::Lines;
use super::raw::{RawPeer, RawPool};
use super::server::resolve;

/// How a pool picks a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Balance {
    /// Weighted round robin.
    RoundRobin,
    /// Weighted random.
    Random,
    /// Consistent hashing (ketama) on a key: the same key stays on the same peer.
    ConsistentHash,
}

/// Where a consistent-hash pool takes its key from when no filter set `sluice.upstream.hash_key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashKey {
    /// The client's IP address.
    SourceIp,
    /// The request path (without the query).
    Path,
    /// A request header.
    Header(String),
    /// A cookie.
    Cookie(String),
    /// A query argument.
    Query(String),
}

/// Active health checking of a pool's peers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// Path requested with GET.
    pub path: String,
    /// Host header of the probe.
    pub host: String,
    /// Time between two probes of a peer.
    pub interval_ms: u64,
    /// Connect and read timeout of one probe.
    pub timeout_ms: u64,
    /// Consecutive successes that bring a peer back.
    pub healthy: usize,
    /// Consecutive failures that take a peer out.
    pub unhealthy: usize,
}

/// Passive ejection: a peer that fails this many requests in a row is skipped for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ejection {
    /// Consecutive connect or proxy failures that eject a peer.
    pub failures: u32,
    /// How long an ejected peer is skipped.
    pub duration_ms: u64,
}

/// TLS towards a pool's peers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// Server name sent in SNI and verified in the certificate.
    pub sni: String,
    /// CA bundle (PEM) to verify against; the system roots when `None`.
    pub ca_file: Option<PathBuf>,
    /// Verify the peer's certificate and name.
    pub verify: bool,
}

/// An upstream pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolDef {
    /// Name.
    pub name: String,
    /// Line of the pool's table, for errors found later.
    pub line: usize,
    /// Peers, resolved.
    pub peers: Vec<SocketAddr>,
    /// Weight of each peer (same order as `peers`).
    pub weights: Vec<usize>,
    /// Selection algorithm.
    pub balance: Balance,
    /// Key source for consistent hashing.
    pub hash_key: HashKey,
    /// TLS to the peers.
    pub tls: Option<UpstreamTls>,
    /// Speak HTTP/2 to the peers (ALPN over TLS, prior knowledge in cleartext).
    pub h2: bool,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout_ms: u64,
    /// Timeout of each read from a peer.
    pub read_timeout_ms: u64,
    /// Extra attempts, on another peer, when connecting fails (any method) or a reused
    /// connection fails before the response (idempotent methods).
    pub retries: usize,
    /// Active health checks.
    pub health: Option<HealthCheck>,
    /// Passive ejection.
    pub ejection: Option<Ejection>,
}

pub(super) fn parse_pool(
    l: &mut Lines<'_>,
    base: &Path,
    name: &str,
    sp: &Spanned<RawPool>,
) -> Option<PoolDef> {
    let span = Some(sp.span());
    let line = l.line_of(sp.span().start);
    let p = sp.get_ref();
    let before = l.out.len();
    let mut peers = Vec::new();
    let mut weights = Vec::new();
    for peer in &p.peers {
        let (addr, weight) = match peer {
            RawPeer::Addr(a) => (a, 1),
            RawPeer::Weighted { addr, weight } => (addr, *weight),
        };
        if weight == 0 || weight > 1000 {
            l.err(
                span.clone(),
                format!("pool {name:?}: weight of {addr} must be 1..=1000"),
            );
        }
        match resolve(addr) {
            Ok(s) if peers.contains(&s) => l.err(
                span.clone(),
                format!("pool {name:?}: peer {addr} is listed twice"),
            ),
            Ok(s) => {
                peers.push(s);
                weights.push(weight.max(1));
            }
            Err(e) => l.err(span.clone(), format!("pool {name:?}: {e}")),
        }
    }
    if p.peers.is_empty() {
        l.err(span.clone(), format!("pool {name:?} has no peers"));
    }
    let balance = match p.balance.as_deref() {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("random") => Balance::Random,
        Some("consistent_hash") => Balance::ConsistentHash,
        Some(other) => {
            l.err(
                span.clone(),
                format!("pool {name:?}: balance must be \"round_robin\", \"random\" or \"consistent_hash\", not {other:?}"),
            );
            Balance::RoundRobin
        }
    };
    let hash_key = match p
        .hash_key
        .as_deref()
        .map(|k| k.split_once(':').unwrap_or((k, "")))
    {
        None | Some(("source_ip", "")) => HashKey::SourceIp,
        Some(("path", "")) => HashKey::Path,
        Some(("header", h)) if !h.is_empty() => HashKey::Header(h.to_ascii_lowercase()),
        Some(("cookie", c)) if !c.is_empty() => HashKey::Cookie(c.to_string()),
        Some(("query", q)) if !q.is_empty() => HashKey::Query(q.to_string()),
        Some(_) => {
            l.err(
                span.clone(),
                format!("pool {name:?}: hash_key must be source_ip, path, header:NAME, cookie:NAME or query:NAME"),
            );
            HashKey::SourceIp
        }
    };
    let tls = p.tls.then(|| UpstreamTls {
        sni: p.sni.clone().unwrap_or_default(),
        ca_file: p.ca_file.as_ref().map(|f| base.join(f)),
        verify: p.verify,
    });
    if let Some(t) = &tls {
        if t.verify && t.sni.is_empty() {
            l.err(
                span.clone(),
                format!("pool {name:?}: tls with verify needs sni (the name to verify)"),
            );
        }
    } else if p.sni.is_some() || p.ca_file.is_some() {
        l.err(
            span.clone(),
            format!("pool {name:?}: sni and ca_file need tls = true"),
        );
    }
    let health = p.health.as_ref().map(|h| HealthCheck {
        path: h.path.clone().unwrap_or_else(|| "/".into()),
        host: h.host.clone().unwrap_or_else(|| "localhost".into()),
        interval_ms: h.interval_ms.unwrap_or(1000).max(50),
        timeout_ms: h.timeout_ms.unwrap_or(1000).max(10),
        healthy: h.healthy.unwrap_or(1).max(1),
        unhealthy: h.unhealthy.unwrap_or(1).max(1),
    });
    if let Some(h) = &health {
        if !h.path.starts_with('/') {
            l.err(
                span.clone(),
                format!("pool {name:?}: health path must start with '/'"),
            );
        }
    }
    let ejection = p.ejection.as_ref().map(|e| Ejection {
        failures: e.failures.unwrap_or(3).max(1),
        duration_ms: e.duration_ms.unwrap_or(10_000).max(1),
    });
    if l.out.len() > before {
        return None;
    }
    Some(PoolDef {
        name: name.to_string(),
        line,
        peers,
        weights,
        balance,
        hash_key,
        tls,
        h2: p.h2,
        connect_timeout_ms: p.connect_timeout_ms.unwrap_or(5000).max(1),
        read_timeout_ms: p.read_timeout_ms.unwrap_or(60_000).max(1),
        retries: p.retries.unwrap_or(2).min(16),
        health,
        ejection,
    })
}
