//! The fleet store's foreign functions (`sluice.fleet.*`, see Sluice's `docs/ABI.md`):
//! starting a counter and reading its completion.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use crate::config::Algorithm;

/// True when the host has a fleet store (`[fleet]` in the policy).
pub fn enabled() -> bool {
    matches!(
        hostcalls::call_foreign_function("sluice.fleet.enabled", None),
        Ok(Some(b)) if b.first() == Some(&1)
    )
}

/// Starts a counter hit on `key`; the token its completion will carry.
pub fn start(key: &str, limit: u32, window_ms: u32, algorithm: Algorithm) -> Result<u32, Status> {
    let name = match algorithm {
        Algorithm::Fixed => "sluice.fleet.incr",
        Algorithm::Sliding => "sluice.fleet.sliding",
    };
    let mut args = Vec::with_capacity(8 + key.len());
    args.extend_from_slice(&window_ms.to_le_bytes());
    args.extend_from_slice(&limit.to_le_bytes());
    args.extend_from_slice(key.as_bytes());
    match hostcalls::call_foreign_function(name, Some(&args))? {
        Some(t) if t.len() == 4 => Ok(u32::from_le_bytes([t[0], t[1], t[2], t[3]])),
        _ => Err(Status::InternalFailure),
    }
}

/// A counter's completion: `Ok((count, reset_ms, counted))`, or the failure status
/// byte (1 error, 2 timeout, 3 unavailable).
pub fn reply(data: &[u8]) -> Result<(u32, u32, bool), u8> {
    match data.split_first() {
        Some((0, rest)) if rest.len() >= 12 => {
            let n = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
            Ok((n(0), n(4), n(8) == 1))
        }
        Some((s, _)) if *s != 0 => Err(*s),
        _ => Err(1),
    }
}
