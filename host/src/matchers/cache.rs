//! The host-wide cache of compiled sets: keyed by the SHA-256 of their encoded
//! arguments and held weakly, so VMs share a set and the last one to drop it frees it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use sha2::{Digest, Sha256};

use super::{MatchError, PmMatcher, RegexMatcher};

type Cache<T> = Mutex<HashMap<[u8; 32], Weak<T>>>;

/// The host-wide cache of one matcher type.
pub(super) trait Cached: Sized + Send + Sync + 'static {
    fn cache() -> &'static Cache<Self>;
}

impl Cached for RegexMatcher {
    fn cache() -> &'static Cache<Self> {
        static C: OnceLock<Cache<RegexMatcher>> = OnceLock::new();
        C.get_or_init(Default::default)
    }
}

impl Cached for PmMatcher {
    fn cache() -> &'static Cache<Self> {
        static C: OnceLock<Cache<PmMatcher>> = OnceLock::new();
        C.get_or_init(Default::default)
    }
}

/// Returns the cached value for `key`, or builds, caches and returns it.
pub(super) fn cached<T: Cached>(
    tag: u8,
    args: &[u8],
    build: impl FnOnce() -> Result<T, MatchError>,
) -> Result<Arc<T>, MatchError> {
    let mut h = Sha256::new();
    h.update([tag]);
    h.update(args);
    let key: [u8; 32] = h.finalize().into();
    let map = T::cache();
    if let Some(hit) = map
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .and_then(Weak::upgrade)
    {
        return Ok(hit);
    }
    // Built outside the lock: compiling a large set takes a while and other VMs may be
    // compiling other sets. Two VMs racing on one set both build; one copy wins the slot.
    let built = Arc::new(build()?);
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    m.retain(|_, w| w.strong_count() > 0);
    if let Some(hit) = m.get(&key).and_then(Weak::upgrade) {
        return Ok(hit);
    }
    m.insert(key, Arc::downgrade(&built));
    Ok(built)
}

#[cfg(test)] // Only the tests count the cache.
/// Number of live compiled sets in the host-wide cache (regex, phrase).
pub fn cached_counts() -> (usize, usize) {
    let r = RegexMatcher::cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter(|w| w.strong_count() > 0)
        .count();
    let p = PmMatcher::cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter(|w| w.strong_count() > 0)
        .count();
    (r, p)
}
