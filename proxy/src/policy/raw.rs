//! The policy file as TOML declares it, before validation: serde types with spans
//! where diagnostics need a line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::ImagesConfig;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) limits: RawLimits,
    pub(super) tls: Option<RawTls>,
    #[serde(default)]
    pub(super) pools: BTreeMap<String, Spanned<RawPool>>,
    #[serde(default)]
    pub(super) filters: BTreeMap<String, RawFilter>,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    pub(super) images: Option<Spanned<ImagesConfig>>,
    pub(super) fleet: Option<Spanned<super::FleetConfig>>,
    #[serde(default)]
    pub(super) timeouts: super::connections::RawTimeouts,
    #[serde(default)]
    pub(super) connections: super::connections::RawConnections,
    #[serde(default)]
    pub(super) paths: crate::paths::PathsConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default)]
    pub(super) listen: Vec<Spanned<String>>,
    pub(super) admin: Option<Spanned<String>>,
    pub(super) threads: Option<usize>,
    #[serde(default)]
    pub(super) watch: bool,
    pub(super) watch_debounce_ms: Option<Spanned<u64>>,
    pub(super) bundle_poll_ms: Option<Spanned<u64>>,
    pub(super) bundle_poll_jitter_ms: Option<u64>,
    #[serde(default)]
    pub(super) debug_headers: bool,
    #[serde(default)]
    pub(super) admin_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) h2c: bool,
    #[serde(default)]
    pub(super) balance_connections: bool,
    pub(super) access_log: Option<String>,
    pub(super) upgrade_sock: Option<String>,
    pub(super) admin_token_env: Option<Spanned<String>>,
    pub(super) admin_token_file: Option<Spanned<String>>,
    pub(super) grace_period_ms: Option<Spanned<u64>>,
    pub(super) forwarded: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) trust_forwarded_from: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) trust_request_id: bool,
    /// Experimental: allow `kind = "component"` filters (WASI 0.3 `wasi:http`).
    #[serde(default)]
    pub(super) component_model: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) memory_mb: Option<usize>,
    pub(super) callback_ms: Option<u64>,
    pub(super) startup_ms: Option<u64>,
    pub(super) table_elements: Option<usize>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) spare_vm: Option<bool>,
    pub(super) rebuild_budget_ms: Option<Spanned<u64>>,
    pub(super) shared_data_max_bytes: Option<usize>,
    pub(super) max_header_bytes: Option<Spanned<usize>>,
    pub(super) max_header_count: Option<Spanned<usize>>,
    pub(super) non_utf8_headers: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) listen: Vec<Spanned<String>>,
    #[serde(default = "yes")]
    pub(super) h2: bool,
    #[serde(default)]
    pub(super) certificates: Vec<Spanned<RawCert>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCert {
    pub(super) cert: String,
    pub(super) key: String,
    #[serde(default)]
    pub(super) names: Vec<String>,
}

pub(super) fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawPeer {
    Addr(String),
    Weighted { addr: String, weight: usize },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) peers: Vec<RawPeer>,
    pub(super) balance: Option<String>,
    pub(super) hash_key: Option<String>,
    #[serde(default)]
    pub(super) tls: bool,
    pub(super) sni: Option<String>,
    pub(super) ca_file: Option<String>,
    #[serde(default = "yes")]
    pub(super) verify: bool,
    #[serde(default)]
    pub(super) h2: bool,
    pub(super) connect_timeout_ms: Option<u64>,
    pub(super) read_timeout_ms: Option<u64>,
    pub(super) retries: Option<usize>,
    pub(super) health: Option<RawHealth>,
    pub(super) ejection: Option<RawEjection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) path: Option<String>,
    pub(super) host: Option<String>,
    pub(super) interval_ms: Option<u64>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) healthy: Option<usize>,
    pub(super) unhealthy: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEjection {
    pub(super) failures: Option<u32>,
    pub(super) duration_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFilter {
    pub(super) module: Spanned<String>,
    pub(super) kind: Option<Spanned<String>>,
    pub(super) reuse_requests: Option<Spanned<usize>>,
    pub(super) reuse_concurrency: Option<Spanned<usize>>,
    pub(super) config: Option<toml::Value>,
    pub(super) vm_config: Option<toml::Value>,
    pub(super) files: Option<Spanned<Vec<super::files::FileEntry>>>,
    pub(super) root_id: Option<String>,
    pub(super) vm_id: Option<String>,
    pub(super) shared_data_max_bytes: Option<usize>,
    pub(super) memory_mb: Option<usize>,
    pub(super) callback_ms: Option<u64>,
    pub(super) startup_ms: Option<u64>,
    pub(super) table_elements: Option<usize>,
    pub(super) spare_vm: Option<bool>,
    pub(super) rebuild_budget_ms: Option<Spanned<u64>>,
    pub(super) on_failure: Option<Spanned<String>>,
    pub(super) failure_status: Option<Spanned<u16>>,
    pub(super) request_body: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Option<String>,
    pub(super) host: Option<String>,
    pub(super) path_prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) filters: Vec<Spanned<String>>,
    pub(super) pool: Option<Spanned<String>>,
    pub(super) function: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) redirect_https: bool,
    #[serde(default)]
    pub(super) metadata: BTreeMap<String, BTreeMap<String, String>>,
}
