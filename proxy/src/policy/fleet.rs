//! `[fleet]`: the store the fleet of Sluice nodes shares (Redis), used by filters
//! through the `sluice.fleet.*` foreign functions (`docs/ABI.md`).

use serde::Deserialize;
use toml::Spanned;

use super::errors::Lines;

/// `[fleet]`: where the shared state lives and how long a call may take.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `redis://HOST:PORT[/DB]` (or `redis+unix:///path`); no TLS.
    pub redis: String,
    /// Longest time one operation may take, milliseconds (then the filter gets a
    /// timeout status and decides: fail open or closed).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Prefix of every key (`PREFIX:f:LEN:VM_ID:KEY`; see docs/ABI.md), so fleets and
    /// tenants may share a Redis.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// After a failed call, how long the node answers `unavailable` at once instead of
    /// trying again, milliseconds (0: always try).
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Most keys remembered as over their limit (answered without a round trip until
    /// their window ends).
    #[serde(default = "default_over_limit_keys")]
    pub over_limit_keys: usize,
    /// How long a persistent-collection record (WAF `initcol`) read from the store is
    /// used before a request reads it again, milliseconds.
    #[serde(default = "default_collections_refresh_ms")]
    pub collections_refresh_ms: u64,
    /// How often the changes filters made to persistent collections are written to the
    /// store (write-behind), milliseconds.
    #[serde(default = "default_collections_flush_ms")]
    pub collections_flush_ms: u64,
}

fn default_timeout_ms() -> u64 {
    50
}
fn default_prefix() -> String {
    "sluice".into()
}
fn default_backoff_ms() -> u64 {
    250
}
fn default_collections_refresh_ms() -> u64 {
    1000
}
fn default_collections_flush_ms() -> u64 {
    100
}
fn default_over_limit_keys() -> usize {
    100_000
}

impl FleetConfig {
    /// Checks the values; the message names the bad key.
    pub fn check(&self) -> Result<(), String> {
        if !(self.redis.starts_with("redis://") || self.redis.starts_with("redis+unix://")) {
            return Err("redis must be a redis:// or redis+unix:// URL (no TLS)".into());
        }
        redis::Client::open(self.redis.as_str()).map_err(|e| format!("redis: {e}"))?;
        if self.timeout_ms == 0 || self.timeout_ms > 10_000 {
            return Err("timeout_ms must be 1 to 10000".into());
        }
        if self.prefix.is_empty() || self.prefix.len() > 64 {
            return Err("prefix must be 1 to 64 bytes".into());
        }
        if self.backoff_ms > 60_000 {
            return Err("backoff_ms must be at most 60000".into());
        }
        if self.collections_refresh_ms == 0 || self.collections_refresh_ms > 3_600_000 {
            return Err("collections_refresh_ms must be 1 to 3600000".into());
        }
        if self.collections_flush_ms == 0 || self.collections_flush_ms > 60_000 {
            return Err("collections_flush_ms must be 1 to 60000".into());
        }
        if self.over_limit_keys > 10_000_000 {
            return Err("over_limit_keys must be at most 10000000".into());
        }
        Ok(())
    }
}

/// Validates `[fleet]` (none when absent).
pub(super) fn parse_fleet(
    l: &mut Lines<'_>,
    raw: Option<Spanned<FleetConfig>>,
) -> Option<FleetConfig> {
    let f = raw?;
    let span = f.span();
    let f = f.into_inner();
    if let Err(e) = f.check() {
        l.err(Some(span), format!("[fleet]: {e}"));
    }
    Some(f)
}
