//! Waiting for a state instead of sleeping for a guessed time.
//!
//! A test that needs "the reload happened", "the tick counter moved" or "the log has the
//! line" polls for it with [`eventually`] (or [`until`] / [`until_value`]): it goes on as
//! soon as the state holds, and on a loaded machine it waits longer instead of failing.
//! When the state never comes, the panic names what was awaited and the last value
//! seen, so a failure says more than "timed out".
//!
//! A fixed `sleep` stays only where the pause is the stimulus of the test (a slowloris
//! client pausing between bytes, a load generator pacing its requests) or where the test
//! checks that something does NOT happen during a period; each such sleep is commented.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use super::{client, Sluice};

/// The first pause between two polls; each pause doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between two polls.
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// Calls `check` until it returns `Ok`, with a short growing pause between calls, for up
/// to `timeout`; returns the `Ok` value. Panics after `timeout` with `what` and the last
/// `Err` value `check` returned (what it observed).
#[track_caller]
pub fn eventually<T, E: Debug>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, E>,
) -> T {
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) => {
                let waited = start.elapsed();
                if waited >= timeout {
                    panic!("timed out after {waited:.1?} waiting for {what}; last seen: {last:?}");
                }
                std::thread::sleep(pause.min(timeout - waited));
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

/// Polls `observe` until `ok` holds for what it returned, for up to `timeout`; returns
/// that value. Panics with `what` and the last value observed.
#[track_caller]
pub fn until_value<V: Debug>(
    timeout: Duration,
    what: &str,
    mut observe: impl FnMut() -> V,
    ok: impl Fn(&V) -> bool,
) -> V {
    eventually(timeout, what, || {
        let v = observe();
        if ok(&v) {
            Ok(v)
        } else {
            Err(v)
        }
    })
}

/// Polls `check` until it is true, for up to `timeout`.
#[track_caller]
pub fn until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    eventually(timeout, what, || if check() { Ok(()) } else { Err(false) })
}

/// `secs` seconds, for the timeouts above.
pub const fn secs(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// Reloads the policy through the admin API and returns the new generation.
pub fn reload(s: &Sluice) -> u64 {
    let r = client().post(s.admin_url("/admin/reload")).send().unwrap();
    let status = r.status();
    let body: serde_json::Value = r.json().unwrap_or_default();
    assert_eq!(status, 200, "{body}");
    body["generation"].as_u64().unwrap()
}

/// Waits until Sluice serves generation `generation` (after a reload it did not start
/// itself: SIGHUP, a watched file); panics with the last status seen.
pub fn wait_generation(s: &Sluice, generation: u64) {
    until_value(
        secs(10),
        &format!("generation {generation} served"),
        || s.status(),
        |st| st["generation"].as_u64() == Some(generation),
    );
}
