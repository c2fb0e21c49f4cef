//! VMs alive by policy generation, process-wide: how the proxy sees a retired
//! policy's VMs drain.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// VMs alive by policy generation.
static GENERATION_VMS: Mutex<BTreeMap<u64, i64>> = Mutex::new(BTreeMap::new());

pub(crate) fn lock_generations() -> std::sync::MutexGuard<'static, BTreeMap<u64, i64>> {
    GENERATION_VMS.lock().unwrap_or_else(|e| e.into_inner())
}

/// VMs alive now by policy generation (served, retired and still finishing requests);
/// generations whose VMs are all gone are listed once more with 0, then forgotten.
pub fn vms_by_generation() -> Vec<(u64, i64)> {
    let mut g = lock_generations();
    let out = g.iter().map(|(k, v)| (*k, *v)).collect();
    g.retain(|_, v| *v != 0);
    out
}
