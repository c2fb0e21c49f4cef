//! Metrics filters define: `proxy_define_metric`, `proxy_increment_metric`,
//! `proxy_record_metric`, `proxy_get_metric`. Process-wide, keyed by plugin name and
//! metric name, so the VMs of one plugin on every thread share one series.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use wasmtime::Caller;
use wasmtime::Result;

use super::{status, Registry, Status, Support};
use crate::memory;
use crate::state::HostState;

/// Most metrics all filters together may define.
pub const MAX_METRICS: usize = 4096;

/// `proxy_metric_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Histogram (sum and count of recorded values).
    Histogram,
}

/// One filter-defined metric as exported.
#[derive(Debug, Clone)]
pub struct MetricValue {
    /// Plugin that defined it.
    pub plugin: String,
    /// Name the filter gave.
    pub name: String,
    /// Kind.
    pub kind: MetricKind,
    /// Counter or gauge value; histogram: last value.
    pub value: i64,
    /// Histogram: sum of recorded values.
    pub sum: u64,
    /// Histogram: number of recorded values.
    pub count: u64,
}

#[derive(Default)]
struct Metrics {
    ids: HashMap<(String, String), u32>,
    values: Vec<MetricValue>,
}

fn metrics() -> std::sync::MutexGuard<'static, Metrics> {
    static M: OnceLock<Mutex<Metrics>> = OnceLock::new();
    M.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// A copy of every filter-defined metric, for export.
pub fn metric_snapshot() -> Vec<MetricValue> {
    metrics().values.clone()
}

fn with_metric<R>(
    id: i32,
    f: impl FnOnce(&mut MetricValue) -> Result<R, Status>,
) -> Result<R, Status> {
    let mut m = metrics();
    let v = (id as u32)
        .checked_sub(1)
        .and_then(|i| m.values.get_mut(i as usize))
        .ok_or(Status::NotFound)?;
    f(v)
}

pub(super) fn register(reg: &mut Registry) -> Result<()> {
    reg.func(
        "env",
        "proxy_define_metric",
        Support::Full,
        "counter, gauge or histogram, shared by the plugin's VMs",
        |mut c: Caller<'_, HostState>,
         kind: i32,
         np: i32,
         nl: i32,
         ret: i32|
         -> wasmtime::Result<i32> {
            status((|| {
                let kind = match kind {
                    0 => MetricKind::Counter,
                    1 => MetricKind::Gauge,
                    2 => MetricKind::Histogram,
                    _ => return Err(Status::BadArgument),
                };
                let name = memory::read_str(&mut c, np, nl)?;
                if name.is_empty() || name.len() > 256 {
                    return Err(Status::BadArgument);
                }
                let plugin = c.data().plugin.name.clone();
                let id = {
                    let mut m = metrics();
                    match m.ids.get(&(plugin.clone(), name.clone())) {
                        Some(id) => *id,
                        None if m.values.len() >= MAX_METRICS => return Err(Status::BadArgument),
                        None => {
                            m.values.push(MetricValue {
                                plugin: plugin.clone(),
                                name: name.clone(),
                                kind,
                                value: 0,
                                sum: 0,
                                count: 0,
                            });
                            let id = m.values.len() as u32;
                            m.ids.insert((plugin, name), id);
                            id
                        }
                    }
                };
                memory::write_u32(&mut c, ret, id)
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_increment_metric",
        Support::Full,
        "counters only grow (`BAD_ARGUMENT` for a negative offset); histograms answer `BAD_ARGUMENT`",
        |_c: Caller<'_, HostState>, id: i32, offset: i64| -> wasmtime::Result<i32> {
            status(with_metric(id, |m| match m.kind {
                MetricKind::Counter if offset < 0 => Err(Status::BadArgument),
                MetricKind::Histogram => Err(Status::BadArgument),
                _ => {
                    m.value = m.value.saturating_add(offset);
                    Ok(())
                }
            }))
        },
    )?;
    reg.func(
        "env",
        "proxy_record_metric",
        Support::Full,
        "sets a counter or gauge, records a histogram sample",
        |_c: Caller<'_, HostState>, id: i32, value: i64| -> wasmtime::Result<i32> {
            status(with_metric(id, |m| {
                m.value = value;
                if m.kind == MetricKind::Histogram {
                    m.sum = m.sum.saturating_add(value as u64);
                    m.count += 1;
                }
                Ok(())
            }))
        },
    )?;
    reg.func(
        "env",
        "proxy_get_metric",
        Support::Full,
        "current value (histograms: `BAD_ARGUMENT`)",
        |mut c: Caller<'_, HostState>, id: i32, ret: i32| -> wasmtime::Result<i32> {
            status((|| {
                let v = with_metric(id, |m| match m.kind {
                    MetricKind::Histogram => Err(Status::BadArgument),
                    _ => Ok(m.value),
                })?;
                memory::write_u64(&mut c, ret, v as u64)
            })())
        },
    )?;
    Ok(())
}
