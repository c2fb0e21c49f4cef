//! Logging, clocks and timers: `proxy_log`, `proxy_get_log_level`,
//! `proxy_get_current_time_nanoseconds`, `proxy_set_tick_period_milliseconds`.

use std::time::{SystemTime, UNIX_EPOCH};

use tracing::level_filters::LevelFilter;
use wasmtime::Caller;
use wasmtime::Result;

use super::{status, Registry, Status, Support};
use crate::memory;
use crate::state::HostState;

/// The level `proxy_get_log_level` answers (Proxy-Wasm numbering, 2 = info); the
/// binary sets it from its log filter.
pub(crate) static GUEST_LOG_LEVEL: std::sync::atomic::AtomicU32 =
    std::sync::atomic::AtomicU32::new(2);

/// Sets the level guests see (`proxy_get_log_level`) from a `tracing` level filter.
pub fn set_guest_log_level(level: LevelFilter) {
    let n = match level {
        LevelFilter::TRACE => 0,
        LevelFilter::DEBUG => 1,
        LevelFilter::INFO => 2,
        LevelFilter::WARN => 3,
        LevelFilter::ERROR => 4,
        _ => 5,
    };
    GUEST_LOG_LEVEL.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// Emits one guest log line into `tracing`, tagged with the plugin name.
pub(crate) fn emit(plugin: &str, level: i32, msg: &str) {
    match level {
        0 => tracing::trace!(target: "sluice::filter", plugin, "{msg}"),
        1 => tracing::debug!(target: "sluice::filter", plugin, "{msg}"),
        2 => tracing::info!(target: "sluice::filter", plugin, "{msg}"),
        3 => tracing::warn!(target: "sluice::filter", plugin, "{msg}"),
        _ => tracing::error!(target: "sluice::filter", plugin, "{msg}"),
    }
}

pub(super) fn register(reg: &mut Registry) -> Result<()> {
    reg.func(
        "env",
        "proxy_log",
        Support::Full,
        "into `tracing` (target `sluice::filter`) with the plugin name",
        |mut c: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            status((|| {
                if !(0..=5).contains(&level) {
                    return Err(Status::BadArgument);
                }
                let bytes = memory::read(&mut c, ptr, len)?;
                emit(
                    &c.data().plugin.name,
                    level,
                    &String::from_utf8_lossy(&bytes),
                );
                Ok(())
            })())
        },
    )?;
    reg.func(
        "env",
        "proxy_get_log_level",
        Support::Full,
        "the most verbose level the log filter (`SLUICE_LOG`) enables",
        |mut c: Caller<'_, HostState>, ret: i32| -> wasmtime::Result<i32> {
            let level = GUEST_LOG_LEVEL.load(std::sync::atomic::Ordering::Relaxed);
            status(memory::write_u32(&mut c, ret, level))
        },
    )?;
    reg.func(
        "env",
        "proxy_get_current_time_nanoseconds",
        Support::Full,
        "wall clock, nanoseconds since the Unix epoch",
        |mut c: Caller<'_, HostState>, ret: i32| -> wasmtime::Result<i32> {
            status(memory::write_u64(&mut c, ret, now_nanos()))
        },
    )?;
    reg.func(
        "env",
        "proxy_set_tick_period_milliseconds",
        Support::Full,
        "records the root context's tick period (0 stops ticks)",
        |mut c: Caller<'_, HostState>, period: i32| -> wasmtime::Result<i32> {
            c.data_mut().tick_period_ms = period as u32;
            Ok(Status::Ok as i32)
        },
    )?;
    Ok(())
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
