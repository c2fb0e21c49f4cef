//! Policy files: TOML in, a typed and validated [`Policy`] out. Every problem is
//! reported with the file, the line and the reason, all of them at once. No wasm and
//! no Pingora here: compiling modules is the snapshot's job.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub mod connections;
pub mod files;
pub mod images;

pub use connections::{ConnectionLimits, Timeouts};
pub use files::FileGrant;
pub use images::ImagesConfig;

/// One problem found in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The policy file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file.display(), l, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found in a policy.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PolicyErrors(pub Vec<Diagnostic>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// What to do when a filter fails (trap, deadline, lost VM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Answer the request with this status.
    Closed(u16),
    /// Skip the filter for the rest of the request.
    Open,
}

/// Whether a filter needs the whole request body before the origin sees the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestBodyMode {
    /// Hold the request (header and body) until the chain has seen the whole body:
    /// read up to `[limits] max_body_bytes` before the upstream is contacted, 413
    /// beyond (nginx's `proxy_request_buffering on`, as ModSecurity needs it).
    #[default]
    Buffer,
    /// Stream the body to the origin chunk by chunk as the filters pass it on; the
    /// origin sees the request before the filters have seen its body.
    Stream,
}

/// Limits applied to filters (policy-wide defaults, overridable per filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterLimits {
    /// Linear-memory cap of one VM, bytes.
    pub memory_bytes: usize,
    /// CPU deadline of one callback, milliseconds.
    pub callback_ms: u64,
    /// CPU deadline of start-up (instantiate, `proxy_on_vm_start`, `proxy_on_configure`), milliseconds.
    pub startup_ms: u64,
    /// Most elements of one wasm table (function pointers), per VM.
    pub table_elements: usize,
    /// Keep a started VM in reserve on each worker thread.
    pub spare_vm: bool,
    /// Time VM rebuilds after failures may take within 10 s before the crash-loop
    /// guard pauses rebuilds, milliseconds.
    pub rebuild_budget_ms: u64,
    /// Most shared-data bytes (keys and values) the filter may have written.
    pub shared_data_bytes: usize,
}

/// A filter: a module and the configuration it is started with.
#[derive(Debug, Clone)]
pub struct FilterDef {
    /// Name (`plugin_name`).
    pub name: String,
    /// Resolved path of the `.wasm` file.
    pub module: PathBuf,
    /// Line of the `module` key, for errors found later.
    pub line: usize,
    /// Bytes for `proxy_on_configure` (tables are handed over as JSON).
    pub config: Vec<u8>,
    /// Bytes for `proxy_on_vm_start`.
    pub vm_config: Vec<u8>,
    /// Root id.
    pub root_id: String,
    /// VM id (`vm_id`): filters with the same one share shared data and queues.
    pub vm_id: String,
    /// Limits.
    pub limits: FilterLimits,
    /// Failure handling.
    pub on_failure: OnFailure,
    /// Files declared with `files`, read when the policy loaded.
    pub files: std::sync::Arc<Vec<FileGrant>>,
    /// `request_body`: hold the request until this filter has seen the whole body.
    pub request_body: RequestBodyMode,
}

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

/// A route: a match and what serves it.
#[derive(Debug, Clone)]
pub struct RouteDef {
    /// Name (for logs, metrics and the `sluice.route` property).
    pub name: String,
    /// Host to match: exact, `*.suffix`, or any when `None`.
    pub host: Option<String>,
    /// Path prefix to match, on segment boundaries (see [`crate::paths::prefix_matches`]).
    pub path_prefix: String,
    /// Indexes into [`Policy::filters`], in chain order.
    pub filters: Vec<usize>,
    /// Index into [`Policy::pools`].
    pub pool: usize,
    /// Answer cleartext requests with a redirect to HTTPS.
    pub redirect_https: bool,
    /// `metadata`: namespace, key, value; filters read them as the Envoy attribute
    /// `xds.route_metadata.filter_metadata.<namespace>.<key>`.
    pub metadata: Vec<(String, String, String)>,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// File it was read from.
    pub path: PathBuf,
    /// SHA-256 of the file, hex.
    pub hash: String,
    /// Traffic listeners.
    pub listen: Vec<SocketAddr>,
    /// Cleartext listeners also accept HTTP/2 with prior knowledge (h2c).
    pub h2c: bool,
    /// TLS termination.
    pub tls: Option<TlsDef>,
    /// Admin listener.
    pub admin: Option<SocketAddr>,
    /// Worker threads.
    pub threads: usize,
    /// Reload when the policy file or one of its modules changes.
    pub watch: bool,
    /// How long a watched file must stay unchanged (size, mtime, content) before it is read.
    pub watch_debounce: std::time::Duration,
    /// Answer `x-sluice-debug` requests with the generation and policy hash.
    pub debug_headers: bool,
    /// Host names (besides `localhost` and IP literals) the admin API answers without a token.
    pub admin_hosts: Vec<String>,
    /// Where access-log lines go: `None` (off), `"stdout"` or a file path.
    pub access_log: Option<String>,
    /// The bearer token the admin API asks for (read from an env var or a file).
    pub admin_token: Option<String>,
    /// Most request or response body bytes buffered for filters.
    pub max_body_bytes: usize,
    /// Request header limits and the bytes filters may see (`[limits]`).
    pub headers: crate::header_guard::HeaderRules,
    /// Filters by definition order.
    pub filters: Vec<FilterDef>,
    /// Pools.
    pub pools: Vec<PoolDef>,
    /// Routes, matched in order.
    pub routes: Vec<RouteDef>,
    /// Hard limits of image transforms (`[images]`).
    pub images: ImagesConfig,
    /// Downstream connection timeouts (`[timeouts]`).
    pub timeouts: Timeouts,
    /// Downstream connection limits (`[connections]`).
    pub connections: ConnectionLimits,
    /// How long SIGTERM waits for requests in flight (`[server] grace_period_ms`).
    pub grace_period: std::time::Duration,
    /// Path normalisation before routing (`[paths]`).
    pub paths: crate::paths::PathsConfig,
    /// `x-request-id` and `x-forwarded-*` handling (`[server] forwarded`,
    /// `trust_forwarded_from`, `trust_request_id`).
    pub forwarded: crate::forwarded::Config,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    limits: RawLimits,
    tls: Option<RawTls>,
    #[serde(default)]
    pools: BTreeMap<String, Spanned<RawPool>>,
    #[serde(default)]
    filters: BTreeMap<String, RawFilter>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    images: Option<Spanned<ImagesConfig>>,
    #[serde(default)]
    timeouts: connections::RawTimeouts,
    #[serde(default)]
    connections: connections::RawConnections,
    #[serde(default)]
    paths: crate::paths::PathsConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    admin: Option<Spanned<String>>,
    threads: Option<usize>,
    #[serde(default)]
    watch: bool,
    watch_debounce_ms: Option<Spanned<u64>>,
    #[serde(default)]
    debug_headers: bool,
    #[serde(default)]
    admin_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    h2c: bool,
    access_log: Option<String>,
    admin_token_env: Option<Spanned<String>>,
    admin_token_file: Option<Spanned<String>>,
    grace_period_ms: Option<Spanned<u64>>,
    forwarded: Option<Spanned<String>>,
    #[serde(default)]
    trust_forwarded_from: Vec<Spanned<String>>,
    #[serde(default)]
    trust_request_id: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_mb: Option<usize>,
    callback_ms: Option<u64>,
    startup_ms: Option<u64>,
    table_elements: Option<usize>,
    max_body_bytes: Option<usize>,
    spare_vm: Option<bool>,
    rebuild_budget_ms: Option<Spanned<u64>>,
    shared_data_max_bytes: Option<usize>,
    max_header_bytes: Option<Spanned<usize>>,
    max_header_count: Option<Spanned<usize>>,
    non_utf8_headers: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    listen: Vec<Spanned<String>>,
    #[serde(default = "yes")]
    h2: bool,
    #[serde(default)]
    certificates: Vec<Spanned<RawCert>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCert {
    cert: String,
    key: String,
    #[serde(default)]
    names: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPeer {
    Addr(String),
    Weighted { addr: String, weight: usize },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    peers: Vec<RawPeer>,
    balance: Option<String>,
    hash_key: Option<String>,
    #[serde(default)]
    tls: bool,
    sni: Option<String>,
    ca_file: Option<String>,
    #[serde(default = "yes")]
    verify: bool,
    #[serde(default)]
    h2: bool,
    connect_timeout_ms: Option<u64>,
    read_timeout_ms: Option<u64>,
    retries: Option<usize>,
    health: Option<RawHealth>,
    ejection: Option<RawEjection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    path: Option<String>,
    host: Option<String>,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    healthy: Option<usize>,
    unhealthy: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEjection {
    failures: Option<u32>,
    duration_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    module: Spanned<String>,
    config: Option<toml::Value>,
    vm_config: Option<toml::Value>,
    files: Option<Spanned<Vec<String>>>,
    root_id: Option<String>,
    vm_id: Option<String>,
    shared_data_max_bytes: Option<usize>,
    memory_mb: Option<usize>,
    callback_ms: Option<u64>,
    startup_ms: Option<u64>,
    table_elements: Option<usize>,
    spare_vm: Option<bool>,
    rebuild_budget_ms: Option<Spanned<u64>>,
    on_failure: Option<Spanned<String>>,
    failure_status: Option<Spanned<u16>>,
    request_body: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<String>,
    host: Option<String>,
    path_prefix: Option<Spanned<String>>,
    #[serde(default)]
    filters: Vec<Spanned<String>>,
    pool: Spanned<String>,
    #[serde(default)]
    redirect_https: bool,
    #[serde(default)]
    metadata: BTreeMap<String, BTreeMap<String, String>>,
}

struct Lines<'a> {
    file: &'a Path,
    text: &'a str,
    out: Vec<Diagnostic>,
}

impl Lines<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }
    fn err(&mut self, span: Option<std::ops::Range<usize>>, message: impl Into<String>) {
        let line = span.map(|s| self.line_of(s.start));
        self.out.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            message: message.into(),
        });
    }
}

/// Bytes handed to a filter for a config value: strings as they are, anything else
/// (tables, arrays, numbers) as JSON.
fn config_bytes(v: &toml::Value) -> Vec<u8> {
    match v {
        toml::Value::String(s) => s.clone().into_bytes(),
        other => serde_json::to_vec(other).unwrap_or_default(),
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {addr:?} resolves to nothing"))
}

/// Default traffic listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default admin listener.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
/// A filter's shared-data quota when its policy sets none (`shared_data_max_bytes`).
pub const DEFAULT_SHARED_DATA_BYTES: usize = 16 << 20;

impl Policy {
    /// Reads and validates the policy at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            PolicyErrors(vec![Diagnostic {
                file: path.to_path_buf(),
                line: None,
                message: format!("cannot read policy: {e}"),
            }])
        })?;
        Policy::parse(path, &text)
    }

    /// Validates policy text; `path` names it in errors and anchors relative module paths.
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyErrors> {
        use sha2::Digest;
        let mut l = Lines {
            file: path,
            text,
            out: Vec::new(),
        };
        let raw: RawPolicy = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let msg = e.message().to_string();
                l.err(e.span(), msg);
                return Err(PolicyErrors(l.out));
            }
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let mut listen = Vec::new();
        if raw.server.listen.is_empty() {
            listen.push(DEFAULT_LISTEN.parse().expect("default address"));
        }
        for a in &raw.server.listen {
            match resolve(a.get_ref()) {
                Ok(s) => listen.push(s),
                Err(e) => l.err(Some(a.span()), e),
            }
        }
        let admin = match &raw.server.admin {
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
        let threads = raw.server.threads.unwrap_or(2).clamp(1, 256);
        let mut admin_token = None;
        if let Some(var) = &raw.server.admin_token_env {
            match std::env::var(var.get_ref()) {
                Ok(t) if !t.trim().is_empty() => admin_token = Some(t.trim().to_string()),
                _ => l.err(
                    Some(var.span()),
                    format!("admin token variable {} is not set", var.get_ref()),
                ),
            }
        }
        if let Some(file) = &raw.server.admin_token_file {
            match std::fs::read_to_string(base.join(file.get_ref())) {
                Ok(t) if !t.trim().is_empty() => admin_token = Some(t.trim().to_string()),
                _ => l.err(
                    Some(file.span()),
                    format!("cannot read an admin token from {}", file.get_ref()),
                ),
            }
        }
        if admin.is_some_and(|a| !a.ip().is_loopback()) && admin_token.is_none() && l.out.is_empty()
        {
            l.err(
                raw.server.admin.as_ref().map(|a| a.span()),
                "an admin listener off loopback needs admin_token_env or admin_token_file",
            );
        }
        let watch_debounce = parse_watch_debounce(&mut l, raw.server.watch_debounce_ms.as_ref());
        let admin_hosts = parse_admin_hosts(&mut l, &raw.server.admin_hosts);
        let forwarded = parse_forwarded(&mut l, &raw.server);
        let access_log = match raw.server.access_log.as_deref() {
            None | Some("off") | Some("") => None,
            Some("stdout") => Some("stdout".to_string()),
            Some(path) => Some(base.join(path).display().to_string()),
        };
        let default_limits = FilterLimits {
            memory_bytes: raw.limits.memory_mb.unwrap_or(64) << 20,
            callback_ms: raw.limits.callback_ms.unwrap_or(100),
            startup_ms: raw.limits.startup_ms.unwrap_or(5000),
            table_elements: raw.limits.table_elements.unwrap_or(100_000),
            spare_vm: raw.limits.spare_vm.unwrap_or(true),
            rebuild_budget_ms: rebuild_budget(&mut l, raw.limits.rebuild_budget_ms.as_ref(), 2500),
            shared_data_bytes: raw
                .limits
                .shared_data_max_bytes
                .unwrap_or(DEFAULT_SHARED_DATA_BYTES),
        };
        let headers = header_rules(&mut l, &raw.limits);

        let mut pools = Vec::new();
        for (name, sp) in &raw.pools {
            if let Some(pool) = parse_pool(&mut l, base, name, sp) {
                pools.push(pool);
            }
        }
        let tls = raw.tls.as_ref().map(|t| parse_tls(&mut l, base, t));

        let mut filters = Vec::new();
        for (name, f) in &raw.filters {
            let module = base.join(f.module.get_ref());
            let line = l.line_of(f.module.span().start);
            let on_failure = match f.on_failure.as_ref().map(|s| s.get_ref().as_str()) {
                None | Some("fail_closed") => {
                    let status = f
                        .failure_status
                        .as_ref()
                        .map(|s| *s.get_ref())
                        .unwrap_or(503);
                    if !(200..=599).contains(&status) {
                        l.err(
                            f.failure_status.as_ref().map(|s| s.span()),
                            "failure_status must be 200..599",
                        );
                    }
                    OnFailure::Closed(status)
                }
                Some("fail_open") => OnFailure::Open,
                Some(other) => {
                    l.err(
                        f.on_failure.as_ref().map(|s| s.span()),
                        format!("filter {name:?}: on_failure must be \"fail_open\" or \"fail_closed\", not {other:?}"),
                    );
                    OnFailure::Open
                }
            };
            let request_body = match f.request_body.as_ref().map(|s| s.get_ref().as_str()) {
                None | Some("buffer") => RequestBodyMode::Buffer,
                Some("stream") => RequestBodyMode::Stream,
                Some(other) => {
                    l.err(
                        f.request_body.as_ref().map(|s| s.span()),
                        format!("filter {name:?}: request_body must be \"buffer\" or \"stream\", not {other:?}"),
                    );
                    RequestBodyMode::Buffer
                }
            };
            let files = match &f.files {
                Some(list) => files::load(base, list.get_ref()).unwrap_or_else(|e| {
                    l.err(Some(list.span()), format!("filter {name:?}: {e}"));
                    Vec::new()
                }),
                None => Vec::new(),
            };
            filters.push(FilterDef {
                files: std::sync::Arc::new(files),
                name: name.clone(),
                module,
                line,
                config: f.config.as_ref().map(config_bytes).unwrap_or_default(),
                vm_config: f.vm_config.as_ref().map(config_bytes).unwrap_or_default(),
                root_id: f.root_id.clone().unwrap_or_default(),
                vm_id: f.vm_id.clone().unwrap_or_else(|| name.clone()),
                limits: FilterLimits {
                    memory_bytes: f
                        .memory_mb
                        .map(|m| m << 20)
                        .unwrap_or(default_limits.memory_bytes),
                    callback_ms: f.callback_ms.unwrap_or(default_limits.callback_ms),
                    startup_ms: f.startup_ms.unwrap_or(default_limits.startup_ms),
                    table_elements: f.table_elements.unwrap_or(default_limits.table_elements),
                    spare_vm: f.spare_vm.unwrap_or(default_limits.spare_vm),
                    rebuild_budget_ms: rebuild_budget(
                        &mut l,
                        f.rebuild_budget_ms.as_ref(),
                        default_limits.rebuild_budget_ms,
                    ),
                    shared_data_bytes: f
                        .shared_data_max_bytes
                        .unwrap_or(default_limits.shared_data_bytes),
                },
                on_failure,
                request_body,
            });
        }

        let mut routes = Vec::new();
        if raw.routes.is_empty() {
            l.err(None, "the policy has no [[routes]]");
        }
        for (i, r) in raw.routes.iter().enumerate() {
            let name = r.name.clone().unwrap_or_else(|| format!("route{i}"));
            let mut chain = Vec::new();
            for f in &r.filters {
                match filters.iter().position(|d| d.name == *f.get_ref()) {
                    Some(idx) => chain.push(idx),
                    None => l.err(
                        Some(f.span()),
                        format!("route {name:?} names unknown filter {:?}", f.get_ref()),
                    ),
                }
            }
            let pool = match pools.iter().position(|p| p.name == *r.pool.get_ref()) {
                Some(p) => p,
                None => {
                    l.err(
                        Some(r.pool.span()),
                        format!("route {name:?} names unknown pool {:?}", r.pool.get_ref()),
                    );
                    0
                }
            };
            let path_prefix = match &r.path_prefix {
                Some(p) if !p.get_ref().starts_with('/') => {
                    l.err(Some(p.span()), "path_prefix must start with '/'");
                    "/".to_string()
                }
                Some(p) => {
                    let prefix = match raw.paths.case {
                        crate::paths::Case::Lower => p.get_ref().to_ascii_lowercase(),
                        crate::paths::Case::Sensitive => p.get_ref().clone(),
                    };
                    // Requests are matched normalised: a prefix that is not never matches.
                    match crate::paths::normalize_path(prefix.as_bytes(), &raw.paths) {
                        Ok(None) => {}
                        Ok(Some(canonical)) => l.err(
                            Some(p.span()),
                            format!("path_prefix {prefix:?} is not normalised ([paths]): write {canonical:?}"),
                        ),
                        Err(e) => l.err(Some(p.span()), format!("path_prefix {prefix:?}: {e}")),
                    }
                    prefix
                }
                None => "/".to_string(),
            };
            if r.redirect_https && tls.is_none() {
                l.err(
                    Some(r.pool.span()),
                    format!("route {name:?} has redirect_https but the policy has no [tls]"),
                );
            }
            routes.push(RouteDef {
                redirect_https: r.redirect_https,
                name,
                host: r
                    .host
                    .clone()
                    .filter(|h| h != "*")
                    .map(|h| h.to_ascii_lowercase()),
                path_prefix,
                filters: chain,
                pool,
                metadata: r
                    .metadata
                    .iter()
                    .flat_map(|(ns, kv)| {
                        kv.iter()
                            .map(move |(k, v)| (ns.clone(), k.clone(), v.clone()))
                    })
                    .collect(),
            });
        }
        let images = match raw.images {
            Some(i) => {
                let span = i.span();
                let i = i.into_inner();
                if let Err(e) = i.check() {
                    l.err(Some(span), format!("[images]: {e}"));
                }
                i
            }
            None => Default::default(),
        };
        let timeouts = connections::timeouts(&mut l, &raw.timeouts);
        let connection_limits = connections::limits(&mut l, &raw.connections);
        let grace_period = connections::grace_period(&mut l, &raw.server.grace_period_ms);
        if !l.out.is_empty() {
            return Err(PolicyErrors(l.out));
        }
        // Declared files are content of the policy: a changed rule file is a new policy.
        let mut hash = sha2::Sha256::new();
        hash.update(text.as_bytes());
        for file in filters.iter().flat_map(|f| f.files.iter()) {
            hash.update((file.name.len() as u64).to_le_bytes());
            hash.update(file.name.as_bytes());
            hash.update((file.data.len() as u64).to_le_bytes());
            hash.update(&file.data);
        }
        Ok(Policy {
            path: path.to_path_buf(),
            hash: hex::encode(hash.finalize()),
            listen,
            h2c: raw.server.h2c,
            tls,
            admin,
            threads,
            watch: raw.server.watch,
            watch_debounce,
            debug_headers: raw.server.debug_headers,
            admin_hosts,
            forwarded,
            access_log,
            admin_token,
            max_body_bytes: raw.limits.max_body_bytes.unwrap_or(1 << 20),
            headers,
            filters,
            pools,
            routes,
            images,
            timeouts,
            connections: connection_limits,
            grace_period,
            paths: raw.paths,
        })
    }
}

/// `rebuild_budget_ms`: 1 ms to the crash-loop window (10 s).
fn rebuild_budget(l: &mut Lines<'_>, v: Option<&Spanned<u64>>, default: u64) -> u64 {
    match v {
        None => default,
        Some(v) if (1..=10_000).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            l.err(
                Some(v.span()),
                "rebuild_budget_ms must be 1..10000 (the crash-loop window is 10 s)",
            );
            default
        }
    }
}

/// `max_header_bytes`, `max_header_count` and `non_utf8_headers` of `[limits]`.
fn header_rules(l: &mut Lines<'_>, raw: &RawLimits) -> crate::header_guard::HeaderRules {
    use crate::header_guard::{HeaderRules, NonUtf8, MAX_MAX_BYTES, MAX_MAX_COUNT};
    let mut rules = HeaderRules::default();
    if let Some(v) = &raw.max_header_bytes {
        if (1024..=MAX_MAX_BYTES).contains(v.get_ref()) {
            rules.max_bytes = *v.get_ref();
        } else {
            l.err(
                Some(v.span()),
                format!("max_header_bytes must be 1024..{MAX_MAX_BYTES}"),
            );
        }
    }
    if let Some(v) = &raw.max_header_count {
        if (1..=MAX_MAX_COUNT).contains(v.get_ref()) {
            rules.max_count = *v.get_ref();
        } else {
            l.err(
                Some(v.span()),
                format!("max_header_count must be 1..{MAX_MAX_COUNT}"),
            );
        }
    }
    if let Some(v) = &raw.non_utf8_headers {
        match v.get_ref().as_str() {
            "reject" => rules.non_utf8 = NonUtf8::Reject,
            "pass" => rules.non_utf8 = NonUtf8::Pass,
            other => l.err(
                Some(v.span()),
                format!("non_utf8_headers must be \"reject\" or \"pass\", not {other:?}"),
            ),
        }
    }
    rules
}

/// Default of `[server] watch_debounce_ms`.
pub const DEFAULT_WATCH_DEBOUNCE_MS: u64 = 2000;

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

fn parse_tls(l: &mut Lines<'_>, base: &Path, t: &RawTls) -> TlsDef {
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

fn parse_pool(
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

impl RouteDef {
    /// True when the route serves `host` (normalised: [`crate::paths::normalize_host`])
    /// and `path` (normalised, no query).
    pub fn matches(&self, host: &str, path: &str) -> bool {
        let host_ok = match &self.host {
            None => true,
            Some(h) if h.starts_with("*.") => host.ends_with(&h[1..]),
            Some(h) => h == host,
        };
        host_ok && crate::paths::prefix_matches(&self.path_prefix, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        match Policy::parse(Path::new("p.toml"), text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn reports_file_line_and_reason() {
        let e = errs("[pools.a]\npeers = [\"127.0.0.1:1\"]\n\n[[routes]]\npool = \"b\"\nfilters = [\"nope\"]\n");
        assert!(
            e.contains(&"p.toml:6: route \"route0\" names unknown filter \"nope\"".to_string()),
            "{e:?}"
        );
        assert!(
            e.contains(&"p.toml:5: route \"route0\" names unknown pool \"b\"".to_string()),
            "{e:?}"
        );
        let e = errs("[server]\nlisten = 5\n");
        assert!(e[0].starts_with("p.toml:2: "), "{e:?}");
        let e = errs("[bogus]\n");
        assert!(
            e[0].starts_with("p.toml:1: ") && e[0].contains("bogus"),
            "{e:?}"
        );
    }

    #[test]
    fn request_body_mode() {
        let base = "[pools.a]\npeers = [\"127.0.0.1:1\"]\n[[routes]]\npool = \"a\"\nfilters = [\"f\"]\n[filters.f]\nmodule = \"f.wasm\"\n";
        let p = Policy::parse(Path::new("p.toml"), base).unwrap();
        assert_eq!(p.filters[0].request_body, RequestBodyMode::Buffer);
        let p = Policy::parse(
            Path::new("p.toml"),
            &format!("{base}request_body = \"stream\"\n"),
        )
        .unwrap();
        assert_eq!(p.filters[0].request_body, RequestBodyMode::Stream);
        let e = errs(&format!("{base}request_body = \"later\"\n"));
        assert!(
            e[0].starts_with("p.toml:8: ") && e[0].contains("request_body"),
            "{e:?}"
        );
    }

    #[test]
    fn route_matching() {
        let r = RouteDef {
            name: "r".into(),
            host: Some("*.example.com".into()),
            path_prefix: "/api".into(),
            filters: vec![],
            pool: 0,
            redirect_https: false,
            metadata: vec![],
        };
        assert!(r.matches("a.example.com", "/api/x"));
        assert!(!r.matches("example.org", "/api/x"));
        assert!(!r.matches("a.example.com", "/web"));
        assert!(r.matches("a.example.com", "/api"));
        assert!(!r.matches("a.example.com", "/apis"), "segment boundary");
    }

    #[test]
    fn paths_section() {
        let base = "[pools.a]\npeers = [\"127.0.0.1:1\"]\n[[routes]]\npool = \"a\"\npath_prefix = \"/Echo\"\n";
        let p = Policy::parse(Path::new("p.toml"), base).unwrap();
        assert_eq!(p.paths, crate::paths::PathsConfig::default());
        assert_eq!(p.routes[0].path_prefix, "/Echo");
        let text = format!("{base}[paths]\ncase = \"lower\"\nencoded_slashes = \"decode\"\n");
        let p = Policy::parse(Path::new("p.toml"), &text).unwrap();
        assert_eq!(p.paths.case, crate::paths::Case::Lower);
        assert_eq!(p.paths.encoded_slashes, crate::paths::Separators::Decode);
        assert_eq!(
            p.routes[0].path_prefix, "/echo",
            "prefixes follow case = lower"
        );
        let e = errs(&format!("{base}[paths]\nbackslashes = \"maybe\"\n"));
        assert!(e[0].starts_with("p.toml:7: "), "{e:?}");
        let e = errs(&format!("{base}[paths]\nmerge = true\n"));
        assert!(e[0].starts_with("p.toml:7: "), "{e:?}");
        let bad = base.replace("/Echo", "/x/../echo");
        let e = errs(&bad);
        assert!(
            e[0].starts_with("p.toml:5: ") && e[0].contains("write \"/echo\""),
            "{e:?}"
        );
    }
}
