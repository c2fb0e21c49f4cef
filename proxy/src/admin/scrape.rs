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
    let _ = writeln!(
        text,
        "# HELP sluice_module_cache_refusals_total On-disk module cache directories or entries refused (not owned by Sluice's user, or writable by group or others).\n# TYPE sluice_module_cache_refusals_total counter\nsluice_module_cache_refusals_total {}",
        crate::host::disk_cache::CACHE_REFUSALS.load(std::sync::atomic::Ordering::Relaxed)
    );
    // Filter-defined metrics, one family per name, the plugin as a label.
    let mut values = metric_snapshot();
    values.sort_by(|a, b| (sanitize(&a.name), &a.plugin).cmp(&(sanitize(&b.name), &b.plugin)));
    let mut family: Option<(String, MetricKind)> = None;
    for v in values {
        let base = format!("sluice_wasm_{}", sanitize(&v.name));
        let (name, typ) = match v.kind {
            MetricKind::Counter if base.ends_with("_total") => (base.clone(), "counter"),
            MetricKind::Counter => (format!("{base}_total"), "counter"),
            MetricKind::Gauge => (base.clone(), "gauge"),
            MetricKind::Histogram => (base.clone(), "summary"),
        };
        match &family {
            Some((n, k)) if *n == name && *k != v.kind => continue, // conflicting kinds: first wins
            Some((n, _)) if *n == name => {}
            _ => {
                let _ = writeln!(
                    text,
                    "# HELP {name} Defined by a filter with proxy_define_metric."
                );
                let _ = writeln!(text, "# TYPE {name} {typ}");
                family = Some((name.clone(), v.kind));
            }
        }
        let plugin = escape(&v.plugin);
        match v.kind {
            MetricKind::Histogram => {
                let _ = writeln!(text, "{name}_sum{{plugin=\"{plugin}\"}} {}", v.sum);
                let _ = writeln!(text, "{name}_count{{plugin=\"{plugin}\"}} {}", v.count);
            }
            _ => {
                let _ = writeln!(text, "{name}{{plugin=\"{plugin}\"}} {}", v.value);
            }
        }
    }
    text
}
