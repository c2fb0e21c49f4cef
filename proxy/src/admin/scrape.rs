//! `/metrics`: the text exposition of the process-wide registry ([`crate::metrics`]),
//! with the gauges read from the live snapshot at scrape time, the per-generation VM
//! counts and the filter-defined metrics (`proxy_define_metric`) appended.

use std::fmt::Write as _;

use prometheus::{Encoder, TextEncoder};

use crate::host::abi::{metric_snapshot, MetricKind};
use crate::metrics::metrics;
use crate::snapshot::Snapshot;

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A filter counter's value, sum and count.
type MetricValueParts = (i64, u64, u64);

/// A counter named `<base>_total_<key>_<value>` (a filter's way to tag a counter through
/// an ABI that has no labels, as the WAF's `waf_rule_matches_total_rule_942100`) is
/// exported as `<base>_total{key="value"}`: one family that PromQL can sum by `key`.
/// `key` is lowercase letters; anything else keeps its name.
fn split_tag(name: &str) -> (&str, Option<(&str, &str)>) {
    let Some(at) = name.rfind("_total_") else {
        return (name, None);
    };
    let (base, rest) = (&name[..at + "_total".len()], &name[at + "_total_".len()..]);
    match rest.split_once('_') {
        Some((k, v))
            if !k.is_empty() && !v.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase()) =>
        {
            (base, Some((k, v)))
        }
        _ => (name, None),
    }
}

/// The text exposition of every metric, with gauges taken from `snapshot` now.
pub fn render(snapshot: &Snapshot) -> String {
    let m = metrics();
    m.generation.set(snapshot.generation as i64);
    m.filter_vms.reset();
    m.filter_vm_memory.reset();
    for f in &snapshot.filters {
        let name = f.plugin.info.name.as_str();
        m.filter_vms
            .with_label_values(&[name])
            .set(f.plugin.vm_count());
        m.filter_vm_memory
            .with_label_values(&[name])
            .set(f.plugin.vm_memory_bytes());
    }
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&m.gather(), &mut out);
    let mut text = String::from_utf8(out).unwrap_or_default();
    text.push_str("# HELP sluice_generation_vms Filter VMs alive by policy generation (the live one, and retired ones until their last request ends).\n# TYPE sluice_generation_vms gauge\n");
    for (generation, vms) in crate::host::vms_by_generation() {
        let _ = writeln!(
            text,
            "sluice_generation_vms{{generation=\"{generation}\"}} {vms}"
        );
    }
    text.push_str("# HELP sluice_worker_connections Client connections open on each worker thread (with balance_connections, a new one goes to the least loaded).\n# TYPE sluice_worker_connections gauge\n");
    for (worker, open) in crate::listener::balance::snapshot().iter().enumerate() {
        let _ = writeln!(
            text,
            "sluice_worker_connections{{worker=\"{worker}\"}} {open}"
        );
    }
    let _ = writeln!(
        text,
        "# HELP sluice_module_cache_refusals_total On-disk module cache directories or entries refused (not owned by Sluice's user, or writable by group or others).\n# TYPE sluice_module_cache_refusals_total counter\nsluice_module_cache_refusals_total {}",
        crate::host::disk_cache::CACHE_REFUSALS.load(std::sync::atomic::Ordering::Relaxed)
    );
    // Filter-defined metrics, one family per name, the plugin (and a tag taken from the
    // name, see `split_tag`) as labels.
    let mut values: Vec<(String, String, MetricKind, String, MetricValueParts)> = metric_snapshot()
        .into_iter()
        .map(|v| {
            let name = sanitize(&v.name);
            let (base, tag) = match v.kind {
                MetricKind::Counter => split_tag(&name),
                _ => (name.as_str(), None),
            };
            let base = format!("sluice_wasm_{base}");
            let (family, typ) = match v.kind {
                MetricKind::Counter if base.ends_with("_total") => (base, "counter"),
                MetricKind::Counter => (format!("{base}_total"), "counter"),
                MetricKind::Gauge => (base, "gauge"),
                MetricKind::Histogram => (base, "summary"),
            };
            let mut labels = format!("plugin=\"{}\"", escape(&v.plugin));
            if let Some((k, val)) = tag {
                let _ = write!(labels, ",{k}=\"{}\"", escape(val));
            }
            (
                family,
                labels,
                v.kind,
                typ.to_string(),
                (v.value, v.sum, v.count),
            )
        })
        .collect();
    values.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut family: Option<(String, MetricKind)> = None;
    for (name, labels, kind, typ, (value, sum, count)) in values {
        match &family {
            Some((n, k)) if *n == name && *k != kind => continue, // conflicting kinds: first wins
            Some((n, _)) if *n == name => {}
            _ => {
                let _ = writeln!(
                    text,
                    "# HELP {name} Defined by a filter with proxy_define_metric."
                );
                let _ = writeln!(text, "# TYPE {name} {typ}");
                family = Some((name.clone(), kind));
            }
        }
        match kind {
            MetricKind::Histogram => {
                let _ = writeln!(text, "{name}_sum{{{labels}}} {sum}");
                let _ = writeln!(text, "{name}_count{{{labels}}} {count}");
            }
            _ => {
                let _ = writeln!(text, "{name}{{{labels}}} {value}");
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::split_tag;

    #[test]
    fn tagged_counter_names_become_a_label() {
        assert_eq!(
            split_tag("waf_rule_matches_total_rule_942100"),
            ("waf_rule_matches_total", Some(("rule", "942100")))
        );
        assert_eq!(
            split_tag("waf_category_matches_total_category_protocol_attack"),
            (
                "waf_category_matches_total",
                Some(("category", "protocol_attack"))
            )
        );
        assert_eq!(split_tag("waf_blocked_total"), ("waf_blocked_total", None));
        assert_eq!(split_tag("a_total_9_x"), ("a_total_9_x", None));
        assert_eq!(split_tag("a_total_rule_"), ("a_total_rule_", None));
    }
}
