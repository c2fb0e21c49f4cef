//! Counters on this node only: Proxy-Wasm shared data (process-wide, shared by the
//! worker threads' VMs), updated with a compare-and-set loop.
//!
//! A key's value is 16 bytes: the window number (u64), the current window's count and
//! the previous window's (u32 each), little-endian.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use crate::config::Algorithm;

/// How many times a write is tried against concurrent writers before giving up.
const CAS_TRIES: usize = 16;

/// What one hit gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Count of the window after this hit (or the estimate, sliding).
    pub count: u32,
    /// Milliseconds until the window ends.
    pub reset_ms: u32,
    /// Within the limit.
    pub allowed: bool,
}

#[link(wasm_import_module = "env")]
extern "C" {
    // The SDK's wrapper panics on statuses other than OK and CAS_MISMATCH (a host may
    // refuse a new key with BAD_ARGUMENT when its table is full): called directly.
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> Status;
}

fn set(key: &str, value: &[u8], cas: u32) -> Status {
    // SAFETY: both slices are valid for their lengths during the call.
    unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) }
}

/// The next state of a key's counters at `now_ms`: (window, current, previous).
pub fn roll(stored: Option<(u64, u32, u32)>, now_ms: u64, window_ms: u32) -> (u64, u32, u32) {
    let w = now_ms / window_ms as u64;
    match stored {
        Some((win, cur, prev)) if win == w => (w, cur, prev),
        Some((win, cur, _)) if win + 1 == w => (w, 0, cur),
        _ => (w, 0, 0),
    }
}

/// Decides one hit on counters `(win, cur, prev)`: the hit, and the counters to store
/// (`None`: nothing to write, the hit is refused and not counted).
pub fn decide(
    (win, cur, prev): (u64, u32, u32),
    now_ms: u64,
    window_ms: u32,
    limit: u32,
    algorithm: Algorithm,
) -> (Hit, Option<(u64, u32, u32)>) {
    let w = window_ms as u64;
    let left = ((win + 1) * w).saturating_sub(now_ms) as u32;
    let seen = match algorithm {
        Algorithm::Fixed => cur,
        Algorithm::Sliding => (prev as u64 * left as u64 / w) as u32 + cur,
    };
    if seen >= limit {
        let count = seen.saturating_add(1);
        return (
            Hit {
                count,
                reset_ms: left,
                allowed: false,
            },
            None,
        );
    }
    let hit = Hit {
        count: seen + 1,
        reset_ms: left,
        allowed: true,
    };
    (hit, Some((win, cur + 1, prev)))
}

/// Counts one hit on `key`; `Err` when the store refused it (full, or too contended).
pub fn hit(
    key: &str,
    limit: u32,
    window_ms: u32,
    algorithm: Algorithm,
    now_ms: u64,
) -> Result<Hit, Status> {
    for _ in 0..CAS_TRIES {
        let (data, cas) = hostcalls::get_shared_data(key)?;
        let stored = data.filter(|d| d.len() == 16).map(|d| {
            let n = |r: std::ops::Range<usize>| {
                let mut b = [0u8; 8];
                b[..r.len()].copy_from_slice(&d[r]);
                u64::from_le_bytes(b)
            };
            (n(0..8), n(8..12) as u32, n(12..16) as u32)
        });
        let state = roll(stored, now_ms, window_ms);
        let (hit, next) = decide(state, now_ms, window_ms, limit, algorithm);
        let Some((win, cur, prev)) = next else {
            return Ok(hit);
        };
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&win.to_le_bytes());
        v[8..12].copy_from_slice(&cur.to_le_bytes());
        v[12..].copy_from_slice(&prev.to_le_bytes());
        match set(key, &v, cas.unwrap_or(0)) {
            Status::Ok => return Ok(hit),
            Status::CasMismatch if cas.is_some() => continue,
            // No CAS for a new key: another writer may have created it meanwhile; a
            // mismatch on an existing key is also how a host says "over your quota".
            Status::CasMismatch => continue,
            other => return Err(other),
        }
    }
    Err(Status::CasMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_roll_and_count() {
        assert_eq!(roll(None, 61_000, 60_000), (1, 0, 0));
        assert_eq!(roll(Some((0, 7, 3)), 61_000, 60_000), (1, 0, 7));
        assert_eq!(roll(Some((1, 2, 7)), 61_000, 60_000), (1, 2, 7));
        assert_eq!(roll(Some((0, 7, 3)), 130_000, 60_000), (2, 0, 0));
        let (h, next) = decide((1, 9, 0), 61_000, 60_000, 10, Algorithm::Fixed);
        assert_eq!(
            h,
            Hit {
                count: 10,
                reset_ms: 59_000,
                allowed: true
            }
        );
        assert_eq!(next, Some((1, 10, 0)));
        let (h, next) = decide((1, 10, 0), 61_000, 60_000, 10, Algorithm::Fixed);
        assert!(!h.allowed && next.is_none());
        // Sliding: 59 s left of the window, 10 in the previous one: ~9 still count.
        let (h, _) = decide((1, 0, 10), 61_000, 60_000, 10, Algorithm::Sliding);
        assert_eq!(h.count, 10);
        assert!(h.allowed);
        let (h, next) = decide((1, 1, 10), 61_000, 60_000, 10, Algorithm::Sliding);
        assert!(!h.allowed && next.is_none());
    }
}
