//! Upstream pools: peer selection (`pingora-load-balancing`: weighted round robin,
//! random, ketama consistent hashing), active HTTP health checks, passive ejection and
//! the `HttpPeer` each attempt connects to (timeouts, TLS, SNI, CA, h2).
//!
//! A pool whose definition does not change is carried across policy swaps, so its
//! health and ejection state survive reloads; its health loop ends when the last
//! snapshot using it is dropped.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;
use pingora::lb::discovery::Static;
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::consistent::KetamaHashing;
use pingora::lb::selection::{Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;

use crate::metrics::metrics;
use crate::policy::{Balance, Diagnostic, HashKey, PoolDef};

/// How many selection steps one pick may take (ketama walks its ring).
const MAX_ITERATIONS: usize = 256;

enum Selector {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Hash(LoadBalancer<KetamaHashing>),
}

impl Selector {
    fn backends(&self) -> &Backends {
        match self {
            Selector::RoundRobin(lb) => lb.backends(),
            Selector::Random(lb) => lb.backends(),
            Selector::Hash(lb) => lb.backends(),
        }
    }

    fn select_with(&self, key: &[u8], accept: impl Fn(&Backend, bool) -> bool) -> Option<Backend> {
        match self {
            Selector::RoundRobin(lb) => lb.select_with(key, MAX_ITERATIONS, accept),
            Selector::Random(lb) => lb.select_with(key, MAX_ITERATIONS, accept),
            Selector::Hash(lb) => lb.select_with(key, MAX_ITERATIONS, accept),
        }
    }
}

#[derive(Default, Clone, Copy)]
struct PeerFailures {
    consecutive: u32,
    ejected_until: Option<Instant>,
}

/// An upstream pool ready to pick peers.
pub struct UpstreamPool {
    /// The policy's definition.
    pub def: PoolDef,
    selector: Selector,
    failures: Mutex<HashMap<SocketAddr, PeerFailures>>,
    ca: Option<Arc<[WrappedX509]>>,
    /// Distinguishes pooled connections of different TLS settings.
    group_key: u64,
}

fn to_std(addr: &PSocketAddr) -> Option<SocketAddr> {
    addr.as_inet().copied()
}

fn backends(def: &PoolDef) -> Backends {
    let set: BTreeSet<Backend> = def
        .peers
        .iter()
        .zip(&def.weights)
        .map(|(addr, w)| Backend {
            addr: PSocketAddr::Inet(*addr),
            weight: *w,
            ext: Default::default(),
        })
        .collect();
    Backends::new(Static::new(set))
}

fn health_check(def: &PoolDef) -> Option<HttpHealthCheck> {
    let h = def.health.as_ref()?;
    let tls = def.tls.is_some();
    let mut hc = HttpHealthCheck::new(&h.host, tls);
    hc.req.set_uri(h.path.parse().ok()?);
    hc.consecutive_success = h.healthy;
    hc.consecutive_failure = h.unhealthy;
    let timeout = Duration::from_millis(h.timeout_ms);
    hc.peer_template.options.connection_timeout = Some(timeout);
    hc.peer_template.options.read_timeout = Some(timeout);
    if let Some(t) = &def.tls {
        hc.peer_template.sni = t.sni.clone();
        hc.peer_template.options.verify_cert = t.verify;
        hc.peer_template.options.verify_hostname = t.verify;
    }
    Some(hc)
}

fn lb<S>(def: &PoolDef) -> LoadBalancer<S>
where
    S: pingora::lb::selection::BackendSelection + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    let mut lb = LoadBalancer::<S>::from_backends(backends(def));
    if let Some(hc) = health_check(def) {
        lb.set_health_check(Box::new(hc));
    }
    // Static discovery never waits.
    if let Some(Err(e)) = lb.update().now_or_never() {
        tracing::warn!(pool = %def.name, error = %e, "pool update failed");
    }
    lb
}

/// The pool's CA file, read once: its bytes (part of the pool's identity) and path.
fn read_ca(def: &PoolDef) -> Result<Option<(&std::path::Path, Vec<u8>)>, String> {
    let Some(path) = def.tls.as_ref().and_then(|t| t.ca_file.as_ref()) else {
        return Ok(None);
    };
    let pem = std::fs::read(path)
        .map_err(|e| format!("pool {:?}: ca_file {}: {e}", def.name, path.display()))?;
    Ok(Some((path, pem)))
}

/// The certificates of a CA file's PEM bytes.
fn parse_ca(
    def: &PoolDef,
    path: &std::path::Path,
    pem: &[u8],
) -> Result<Arc<[WrappedX509]>, String> {
    let mut out = Vec::new();
    for der in rustls_pemfile::certs(&mut &pem[..]) {
        let der = der.map_err(|e| {
            format!(
                "pool {:?}: ca_file {}: bad PEM: {e}",
                def.name,
                path.display()
            )
        })?;
        x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("pool {:?}: ca_file {}: {e}", def.name, path.display()))?;
        out.push(WrappedX509::new(
            der.to_vec(),
            pingora::utils::tls::parse_x509,
        ));
    }
    if out.is_empty() {
        return Err(format!(
            "pool {:?}: ca_file {} has no certificate",
            def.name,
            path.display()
        ));
    }
    Ok(out.into())
}

static HEALTH_CHECKS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Pools built from now on run their active health checks (`sluice run`; `sluice check`
/// builds pools without probing anything).
pub fn enable_health_checks() {
    HEALTH_CHECKS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Pools alive in the process, by definition: a snapshot built from an unchanged
/// definition gets the same pool (and its health state).
fn registry() -> &'static Mutex<HashMap<PoolDefKey, Weak<UpstreamPool>>> {
    static R: OnceLock<Mutex<HashMap<PoolDefKey, Weak<UpstreamPool>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// A pool definition plus the CA file's bytes (a changed CA is a new pool).
#[derive(PartialEq, Eq, Hash)]
struct PoolDefKey(PoolDef, Vec<u8>);

/// The runtime that runs health checks (one thread, shared by all pools).
fn health_runtime() -> &'static tokio::runtime::Handle {
    static RT: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("sluice-health")
            .build()
            .expect("health-check runtime");
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("sluice-health".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .expect("health-check thread");
        handle
    })
}

impl UpstreamPool {
    /// The certificates (DER) of the pool's `ca_file`, read and checked once when the
    /// pool was built; `None` without a `ca_file`.
    pub fn ca_certificates(&self) -> Option<impl Iterator<Item = &[u8]>> {
        let ca = self.ca.as_ref()?;
        Some(ca.iter().map(|c| c.borrow_raw_cert().as_slice()))
    }

    /// The request header whose value picks the peer (`hash_key = "header:NAME"` on a
    /// consistent-hash pool, lowercase), if that is how the pool balances.
    pub fn hashed_header(&self) -> Option<&str> {
        match &self.def.hash_key {
            HashKey::Header(h) if self.def.balance == Balance::ConsistentHash => Some(h),
            _ => None,
        }
    }

    /// A request's consistent-hash key by the pool's `hash_key` source (`client`: the
    /// client's address, asked for only by `source_ip`); empty unless the pool balances
    /// by consistent hashing. The same key whichever way the request comes (a route's
    /// pool, a component chain).
    pub fn hash_key_of(
        &self,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        client: impl FnOnce() -> Option<String>,
    ) -> Vec<u8> {
        if self.def.balance != Balance::ConsistentHash {
            return Vec::new();
        }
        match &self.def.hash_key {
            HashKey::SourceIp => client().map(String::into_bytes).unwrap_or_default(),
            HashKey::Path => uri.path().as_bytes().to_vec(),
            HashKey::Header(h) => headers
                .get(h.as_str())
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default(),
            HashKey::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
                .filter_map(|kv| {
                    let kv = kv.trim_ascii();
                    let eq = kv.iter().position(|b| *b == b'=')?;
                    (kv[..eq] == *name.as_bytes()).then(|| kv[eq + 1..].to_vec())
                })
                .next()
                .unwrap_or_default(),
            HashKey::Query(arg) => uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k == arg)
                .map(|(_, v)| v.as_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    /// The pool for `def`: the live one with the same definition, or a new one (whose
    /// health checks start now).
    pub fn get(policy: &std::path::Path, def: &PoolDef) -> Result<Arc<UpstreamPool>, Diagnostic> {
        let diag = |message| Diagnostic {
            file: policy.to_path_buf(),
            line: Some(def.line),
            message,
        };
        let ca_file = read_ca(def).map_err(diag)?;
        // Where the pool sits in the file does not make it another pool.
        let key = PoolDefKey(
            PoolDef {
                line: 0,
                ..def.clone()
            },
            ca_file
                .as_ref()
                .map(|(_, pem)| pem.clone())
                .unwrap_or_default(),
        );
        let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        reg.retain(|_, w| w.strong_count() > 0);
        if let Some(p) = reg.get(&key).and_then(Weak::upgrade) {
            return Ok(p);
        }
        let ca = match &ca_file {
            Some((path, pem)) => Some(parse_ca(def, path, pem).map_err(diag)?),
            None => None,
        };
        let selector = match def.balance {
            Balance::RoundRobin => Selector::RoundRobin(lb(def)),
            Balance::Random => Selector::Random(lb(def)),
            Balance::ConsistentHash => Selector::Hash(lb(def)),
        };
        let group_key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            h.finish()
        };
        let pool = Arc::new(UpstreamPool {
            def: def.clone(),
            selector,
            failures: Mutex::default(),
            ca,
            group_key,
        });
        let m = metrics();
        for peer in &def.peers {
            let peer = peer.to_string();
            m.upstream_errors
                .with_label_values(&[def.name.as_str(), &peer]);
            m.upstream_ejections
                .with_label_values(&[def.name.as_str(), &peer]);
            m.upstream_healthy
                .with_label_values(&[def.name.as_str(), &peer])
                .set(1);
        }
        m.upstream_retries.with_label_values(&[def.name.as_str()]);
        let probe = HEALTH_CHECKS.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = def.health.as_ref().filter(|_| probe) {
            let weak = Arc::downgrade(&pool);
            let every = Duration::from_millis(h.interval_ms);
            health_runtime().spawn(async move {
                loop {
                    let Some(pool) = weak.upgrade() else { break };
                    pool.selector.backends().run_health_check(true).await;
                    pool.publish_health();
                    drop(pool);
                    tokio::time::sleep(every).await;
                }
            });
        }
        reg.insert(key, Arc::downgrade(&pool));
        Ok(pool)
    }

    fn publish_health(&self) {
        let m = metrics();
        for b in self.selector.backends().get_backend().iter() {
            if let Some(addr) = to_std(&b.addr) {
                let up = self.selector.backends().ready(b);
                m.upstream_healthy
                    .with_label_values(&[self.def.name.as_str(), &addr.to_string()])
                    .set(i64::from(up));
            }
        }
    }

    fn ejected(&self, addr: &SocketAddr, now: Instant) -> bool {
        if self.def.ejection.is_none() {
            // Nothing is ever ejected: no lock on the pick path.
            return false;
        }
        let f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.get(addr)
            .and_then(|p| p.ejected_until)
            .is_some_and(|until| until > now)
    }

    /// Picks a peer for `key` (ignored unless the pool hashes), skipping unhealthy,
    /// ejected and already `tried` peers. When every peer is out, health is ignored
    /// (better a try than a certain 502), but `tried` peers are still skipped.
    pub fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<SocketAddr> {
        if let [only] = self.def.peers.as_slice() {
            // One peer: whatever its health, it is the pick unless tried (the rule below
            // gives the same answer), without the balancer's per-pick set of seen peers.
            return (!tried.contains(only)).then_some(*only);
        }
        let now = Instant::now();
        let fresh = |b: &Backend| to_std(&b.addr).is_some_and(|a| !tried.contains(&a));
        let picked = self
            .selector
            .select_with(key, |b, healthy| {
                healthy && fresh(b) && to_std(&b.addr).is_some_and(|a| !self.ejected(&a, now))
            })
            .or_else(|| self.selector.select_with(key, |b, _| fresh(b)))?;
        to_std(&picked.addr)
    }

    /// Counts a failed attempt on `addr`; enough in a row eject it for a while.
    pub fn failed(&self, addr: SocketAddr) {
        let Some(e) = self.def.ejection else { return };
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let p = f.entry(addr).or_default();
        p.consecutive += 1;
        if p.consecutive >= e.failures {
            p.consecutive = 0;
            p.ejected_until = Some(Instant::now() + Duration::from_millis(e.duration_ms));
            metrics()
                .upstream_ejections
                .with_label_values(&[self.def.name.as_str(), &addr.to_string()])
                .inc();
            tracing::warn!(pool = %self.def.name, peer = %addr, for_ms = e.duration_ms, "peer ejected after consecutive failures");
        }
    }

    /// Counts a successful response from `addr`.
    pub fn succeeded(&self, addr: SocketAddr) {
        if self.def.ejection.is_none() {
            return;
        }
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = f.get_mut(&addr) {
            p.consecutive = 0;
        }
    }

    /// The peer to connect to for `addr`, with the pool's timeouts, TLS and protocol.
    pub fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let d = &self.def;
        let (tls, sni) = match &d.tls {
            Some(t) => (true, t.sni.clone()),
            None => (false, String::new()),
        };
        let mut peer = HttpPeer::new(addr, tls, sni);
        let o = &mut peer.options;
        o.connection_timeout = Some(Duration::from_millis(d.connect_timeout_ms));
        o.total_connection_timeout = Some(Duration::from_millis(d.connect_timeout_ms * 2));
        o.read_timeout = Some(Duration::from_millis(d.read_timeout_ms));
        o.write_timeout = Some(Duration::from_millis(d.read_timeout_ms));
        o.idle_timeout = Some(Duration::from_secs(60));
        if let Some(t) = &d.tls {
            o.verify_cert = t.verify;
            o.verify_hostname = t.verify;
            o.ca = self.ca.clone();
        }
        if d.h2 {
            // TLS: ALPN offers h2 then http/1.1. Cleartext: h2c with prior knowledge.
            if tls {
                o.set_http_version(2, 1);
            } else {
                o.set_http_version(2, 2);
            }
            o.max_h2_streams = 100;
        }
        peer.group_key = self.group_key;
        peer
    }
}
