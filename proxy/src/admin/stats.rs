//! Numbers the operators' tools show, read from the process-wide metrics (the same
//! series `/metrics` exports, so the status page and `sluice ctl status` never disagree
//! with Prometheus): per filter and phase the callbacks and their p99 (from the
//! histogram's buckets, as `histogram_quantile` computes it), pools with their peers'
//! health, the image variant cache's hit rate and the WAF's rule matches.

use std::collections::BTreeMap;

use prometheus::proto::{Metric, MetricFamily};

use crate::host::abi::{metric_snapshot, MetricKind};
use crate::metrics::metrics;
use crate::snapshot::Snapshot;

/// The value of label `name` on a sample.
fn label<'a>(m: &'a Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
        .unwrap_or("")
}

fn family<'a>(families: &'a [MetricFamily], name: &str) -> &'a [Metric] {
    families
        .iter()
        .find(|f| f.name() == name)
        .map(|f| f.get_metric())
        .unwrap_or(&[])
}

/// The `q` quantile of a cumulative histogram (upper bounds with cumulative counts),
/// interpolated linearly inside the bucket as Prometheus's `histogram_quantile` does.
/// `None` when nothing was observed.
pub fn quantile(q: f64, buckets: &[(f64, u64)], count: u64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let mut lower = (0.0, 0u64);
    for &(upper, cumulative) in buckets {
        if cumulative as f64 >= rank {
            if upper.is_infinite() {
                return Some(lower.0);
            }
            let inside = (cumulative - lower.1) as f64;
            if inside == 0.0 {
                return Some(upper);
            }
            return Some(lower.0 + (upper - lower.0) * (rank - lower.1 as f64) / inside);
        }
        lower = (upper, cumulative);
    }
    // Past the last finite bucket: Prometheus answers that bucket's upper bound.
    Some(lower.0)
}

/// One filter's callbacks in one phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseStats {
    /// Callbacks run.
    pub calls: u64,
    /// 99th percentile of their duration, milliseconds (`None` before the first).
    pub p99_ms: Option<f64>,
    /// Mean duration, milliseconds.
    pub mean_ms: Option<f64>,
}

/// Per filter, per phase: callbacks and their latency (`sluice_filter_duration_seconds`).
pub fn filter_phases(families: &[MetricFamily]) -> BTreeMap<String, BTreeMap<String, PhaseStats>> {
    let mut out: BTreeMap<String, BTreeMap<String, PhaseStats>> = BTreeMap::new();
    for m in family(families, "sluice_filter_duration_seconds") {
        let h = m.get_histogram();
        let count = h.get_sample_count();
        let buckets: Vec<(f64, u64)> = h
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        let stats = PhaseStats {
            calls: count,
            p99_ms: quantile(0.99, &buckets, count).map(|s| s * 1e3),
            mean_ms: (count > 0).then(|| h.get_sample_sum() / count as f64 * 1e3),
        };
        out.entry(label(m, "filter").to_string())
            .or_default()
            .insert(label(m, "phase").to_string(), stats);
    }
    out
}

/// Per filter: failures by kind (`sluice_filter_failures_total`).
pub fn filter_failures(families: &[MetricFamily]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for m in family(families, "sluice_filter_failures_total") {
        out.entry(label(m, "filter").to_string())
            .or_default()
            .insert(
                label(m, "kind").to_string(),
                m.get_counter().get_value() as u64,
            );
    }
    out
}

/// The live snapshot's pools: each peer with its health-check state (1 healthy, as
/// `sluice_upstream_healthy`), its errors and ejections.
pub fn pools(snap: &Snapshot, families: &[MetricFamily]) -> serde_json::Value {
    let value = |name: &str, pool: &str, peer: &str| -> f64 {
        family(families, name)
            .iter()
            .find(|m| label(m, "pool") == pool && label(m, "peer") == peer)
            .map(|m| {
                if name == "sluice_upstream_healthy" {
                    m.get_gauge().get_value()
                } else {
                    m.get_counter().get_value()
                }
            })
            .unwrap_or(0.0)
    };
    let pools: Vec<_> = snap
        .pools
        .iter()
        .map(|p| {
            let name = p.def.name.as_str();
            let peers: Vec<_> = p
                .def
                .peers
                .iter()
                .map(|a| {
                    let peer = a.to_string();
                    serde_json::json!({
                        "peer": peer,
                        "healthy": value("sluice_upstream_healthy", name, &peer) >= 1.0,
                        "errors": value("sluice_upstream_errors_total", name, &peer) as u64,
                        "ejections": value("sluice_upstream_ejections_total", name, &peer) as u64,
                    })
                })
                .collect();
            serde_json::json!({
                "name": name,
                "balance": format!("{:?}", p.def.balance).to_lowercase(),
                "health_check": p.def.health.is_some(),
                "peers": peers,
            })
        })
        .collect();
    serde_json::Value::Array(pools)
}

/// Image variant cache lookups (`sluice_image_cache_total`) and the hit rate.
pub fn image_cache(families: &[MetricFamily]) -> serde_json::Value {
    let count = |result: &str| -> u64 {
        family(families, "sluice_image_cache_total")
            .iter()
            .filter(|m| label(m, "result") == result)
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    };
    let (hits, misses) = (count("hit"), count("miss"));
    let rate = (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64);
    serde_json::json!({
        "hits": hits,
        "misses": misses,
        "hit_rate": rate,
        "bytes": metrics().image_cache_bytes.get(),
    })
}

/// The prefix of the WAF's per-rule counters (`waf_rule_matches_total_rule_<id>`).
const RULE_PREFIX: &str = "waf_rule_matches_total_rule_";

/// The WAF's counters, summed over the plugins that define them: requests blocked,
/// flagged (detect-only) and inspected, and the `top` rules with the most matches.
pub fn waf(top: usize) -> serde_json::Value {
    let mut blocked = 0i64;
    let mut flagged = 0i64;
    let mut inspected = 0i64;
    let mut rules: BTreeMap<u64, i64> = BTreeMap::new();
    for v in metric_snapshot() {
        if v.kind != MetricKind::Counter {
            continue;
        }
        match v.name.as_str() {
            "waf_blocked_total" => blocked += v.value,
            "waf_flagged_total" => flagged += v.value,
            "waf_requests_total" => inspected += v.value,
            name => {
                if let Some(id) = name
                    .strip_prefix(RULE_PREFIX)
                    .and_then(|id| id.parse().ok())
                {
                    *rules.entry(id).or_default() += v.value;
                }
            }
        }
    }
    let mut ranked: Vec<(u64, i64)> = rules.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(top);
    serde_json::json!({
        "blocked": blocked,
        "flagged": flagged,
        "inspected": inspected,
        "top_rules": ranked
            .into_iter()
            .map(|(id, n)| serde_json::json!({"id": id, "matches": n}))
            .collect::<Vec<_>>(),
    })
}

/// The total of a WAF counter over every plugin (`waf_blocked_total`, ...).
pub fn waf_counter(name: &str) -> i64 {
    metric_snapshot()
        .into_iter()
        .filter(|v| v.kind == MetricKind::Counter && v.name == name)
        .map(|v| v.value)
        .sum()
}

/// The total of `sluice_requests_total`.
pub fn requests_total(families: &[MetricFamily]) -> u64 {
    family(families, "sluice_requests_total")
        .iter()
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_interpolate_inside_the_bucket_as_prometheus_does() {
        // 100 observations: 50 at or under 1, 100 at or under 2.
        let b = [(1.0, 50), (2.0, 100), (f64::INFINITY, 100)];
        assert_eq!(quantile(0.5, &b, 100), Some(1.0));
        assert_eq!(quantile(0.99, &b, 100), Some(1.98));
        assert_eq!(quantile(0.99, &b, 0), None);
        // Everything in the +Inf bucket: the last finite bound.
        let b = [(1.0, 0), (f64::INFINITY, 10)];
        assert_eq!(quantile(0.99, &b, 10), Some(1.0));
    }
}
