//! Helpers the #16 area modules share: waiting for a condition, reloading a policy.

use std::time::{Duration, Instant};

use super::common::{client, Sluice};

/// Calls `f` every 50 ms until it returns `Some`, for up to `secs` seconds.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` until it is true, for up to `secs` seconds.
pub fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    eventually(secs, what, || f().then_some(()))
}

/// Reloads the policy through the admin API and returns the new generation.
pub fn reload(s: &Sluice) -> u64 {
    let r = client().post(s.admin_url("/admin/reload")).send().unwrap();
    let status = r.status();
    let body: serde_json::Value = r.json().unwrap_or_default();
    assert_eq!(status, 200, "{body}");
    body["generation"].as_u64().unwrap()
}
