//! Policy files: TOML in, a typed and validated [`Policy`] out. Every problem is
//! reported with the file, the line and the reason, all of them at once. No wasm and
//! no Pingora here: compiling modules is the snapshot's job.
//!
//! `raw` is the file as TOML declares it; each section is validated by its module
//! (`server`, `limits`, `tls`, `pools`, `filters`, `routes`, [`images`],
//! [`connections`]), problems collected as [`Diagnostic`]s (`errors`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod components;
pub mod connections;
mod errors;
pub mod files;
mod filters;
pub mod fleet;
pub mod images;
mod limits;
mod pools;
mod raw;
mod routes;
mod server;
mod tls;

pub use components::ComponentDef;
pub use connections::{ConnectionLimits, Timeouts};
pub use errors::{Diagnostic, PolicyErrors};
pub use files::FileGrant;
pub use filters::{FilterDef, FilterLimits, OnFailure, RequestBodyMode};
pub use fleet::FleetConfig;
pub use images::ImagesConfig;
pub use limits::DEFAULT_SHARED_DATA_BYTES;
pub use pools::{Balance, Ejection, HashKey, HealthCheck, PoolDef, UpstreamTls};
pub use routes::RouteDef;
pub use server::{DEFAULT_ADMIN, DEFAULT_LISTEN, DEFAULT_WATCH_DEBOUNCE_MS};
pub use tls::{CertDef, TlsDef};

use errors::Lines;
use raw::RawPolicy;

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
    /// A new client connection goes to the worker thread with the fewest open, instead
    /// of one picked at random ([`crate::listener::balance`]).
    pub balance_connections: bool,
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
    /// How often a node running this policy from an `oci://` tag looks at the tag
    /// (`[server] bundle_poll_ms`; `sluice run --poll-ms` overrides).
    pub bundle_poll: Option<std::time::Duration>,
    /// Up to this much is added to each bundle poll at random (`[server] bundle_poll_jitter_ms`).
    pub bundle_poll_jitter: Option<std::time::Duration>,
    /// Answer `x-sluice-debug` requests with the generation and policy hash.
    pub debug_headers: bool,
    /// Host names (besides `localhost` and IP literals) the admin API answers without a token.
    pub admin_hosts: Vec<String>,
    /// Where access-log lines go: `None` (off), `"stdout"` or a file path.
    pub access_log: Option<String>,
    /// The Unix socket a running Sluice hands its listening sockets over on, to a new
    /// `sluice run --upgrade` (`[server] upgrade_sock`, relative to the policy; `None`:
    /// no hand-over).
    pub upgrade_sock: Option<PathBuf>,
    /// The bearer token the admin API asks for (read from an env var or a file).
    pub admin_token: Option<String>,
    /// Most request or response body bytes buffered for filters.
    pub max_body_bytes: usize,
    /// Request header limits and the bytes filters may see (`[limits]`).
    pub headers: crate::header_guard::HeaderRules,
    /// Filters by definition order.
    pub filters: Vec<FilterDef>,
    /// Component filters (`kind = "component"`) by definition order.
    pub components: Vec<ComponentDef>,
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
    /// The store shared by the fleet (`[fleet]`), if any.
    pub fleet: Option<FleetConfig>,
}

/// `sluice run --listen/--admin`: addresses of this node that replace the policy's
/// `[server] listen` and `admin` in every policy the process loads.
static NODE_OVERRIDES: std::sync::OnceLock<(Vec<SocketAddr>, Option<SocketAddr>)> =
    std::sync::OnceLock::new();

/// Sets this node's listener and admin addresses (once, before the first policy load);
/// an empty `listen` and `None` keep the policy's.
pub fn set_node_overrides(listen: Vec<SocketAddr>, admin: Option<SocketAddr>) {
    let _ = NODE_OVERRIDES.set((listen, admin));
}

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
        let server::Server {
            listen,
            admin,
            threads,
            admin_token,
            watch_debounce,
            admin_hosts,
            forwarded,
            access_log,
        } = server::parse_server(&mut l, base, &raw.server);
        let (listen, admin) = match NODE_OVERRIDES.get() {
            Some((l, a)) => (if l.is_empty() { listen } else { l.clone() }, a.or(admin)),
            None => (listen, admin),
        };
        let default_limits = limits::default_limits(&mut l, &raw.limits);
        let headers = limits::header_rules(&mut l, &raw.limits);

        let mut pools = Vec::new();
        for (name, sp) in &raw.pools {
            if let Some(pool) = pools::parse_pool(&mut l, base, name, sp) {
                pools.push(pool);
            }
        }
        let tls = raw.tls.as_ref().map(|t| tls::parse_tls(&mut l, base, t));

        let (filters, components) = filters::parse_filters(
            &mut l,
            base,
            &raw.filters,
            &default_limits,
            raw.server.component_model,
        );
        let routes = routes::parse_routes(
            &mut l,
            &raw.routes,
            &raw.paths,
            &filters,
            &components,
            &pools,
            tls.is_some(),
        );
        let images = images::parse_images(&mut l, raw.images);
        let fleet = fleet::parse_fleet(&mut l, raw.fleet);
        let timeouts = connections::timeouts(&mut l, &raw.timeouts);
        let connection_limits = connections::limits(&mut l, &raw.connections);
        let grace_period = connections::grace_period(&mut l, &raw.server.grace_period_ms);
        if let Some(ms) = &raw.server.bundle_poll_ms {
            if !(100..=86_400_000).contains(ms.get_ref()) {
                l.err(
                    Some(ms.span()),
                    "bundle_poll_ms must be between 100 and 86400000",
                );
            }
        }
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
            balance_connections: raw.server.balance_connections,
            tls,
            admin,
            threads,
            watch: raw.server.watch,
            watch_debounce,
            bundle_poll: raw
                .server
                .bundle_poll_ms
                .as_ref()
                .map(|m| std::time::Duration::from_millis(*m.get_ref())),
            bundle_poll_jitter: raw
                .server
                .bundle_poll_jitter_ms
                .map(std::time::Duration::from_millis),
            debug_headers: raw.server.debug_headers,
            admin_hosts,
            forwarded,
            access_log,
            upgrade_sock: raw.server.upgrade_sock.as_ref().map(|p| base.join(p)),
            admin_token,
            max_body_bytes: raw.limits.max_body_bytes.unwrap_or(1 << 20),
            headers,
            filters,
            components,
            pools,
            routes,
            images,
            timeouts,
            connections: connection_limits,
            grace_period,
            paths: raw.paths,
            fleet,
        })
    }
}

#[cfg(test)]
mod tests;
