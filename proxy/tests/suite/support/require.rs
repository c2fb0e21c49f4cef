//! No skip without consent: a test that needs something from outside the Rust build
//! (the OWASP CRS, nginx, Prometheus, curl, the demo certificate) fails when it is
//! missing, unless `SLUICE_TEST_ALLOW_SKIP` names it (or is `all`).
//!
//! ```text
//! SLUICE_TEST_ALLOW_SKIP=crs,nginx,prometheus,curl,demo-tls cargo test -p sluice --test suite
//! ```
//!
//! A skipped test passes, and prints `SKIPPED <test>: ...` (visible with `--nocapture`).
//! The built filters (`filters/out/*.wasm`) are never skippable: the suite tests them.

use std::path::Path;

/// The environment variable that lets tests skip what is missing: a comma-separated
/// list of requirement names (`crs`, `nginx`, `prometheus`, `curl`, `demo-tls`, `docker-registry`, `redis-server`, `chromium`) or `all`.
pub const ALLOW_SKIP: &str = "SLUICE_TEST_ALLOW_SKIP";

/// The OWASP CRS as Debian installs it (package `modsecurity-crs`); requirement `crs`.
pub const CRS_RULES: &str = "/usr/share/modsecurity-crs/rules";

/// Whether `path` is there: a file or directory, or for a bare name (no `/`) a program
/// on `PATH`.
fn present(path: &str) -> bool {
    if path.contains('/') {
        return Path::new(path).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(path).is_file()))
}

/// Whether `SLUICE_TEST_ALLOW_SKIP` allows skipping requirement `what`.
fn skip_allowed(what: &str) -> bool {
    std::env::var(ALLOW_SKIP)
        .is_ok_and(|v| v.split(',').map(str::trim).any(|w| w == what || w == "all"))
}

/// Checks a test's external requirement `what` at `path` (e.g. `("crs", CRS_RULES)`, or
/// `("nginx", "nginx")` for a program on `PATH`): `true` when it is
/// there; when it is missing, `false` if `SLUICE_TEST_ALLOW_SKIP` names `what` (the test
/// then returns early, a skip), and a panic saying what is missing and how to allow the
/// skip otherwise. Use as `if !require("crs", CRS_RULES) { return; }`.
#[track_caller]
pub fn require(what: &str, path: &str) -> bool {
    if present(path) {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    if skip_allowed(what) {
        eprintln!("SKIPPED {test}: {path} ({what}) is missing and {ALLOW_SKIP} allows it");
        return false;
    }
    panic!(
        "{test} needs {path} ({what}), which is missing: run scripts/setup.sh, or set \
         {ALLOW_SKIP}={what} (or =all) to skip the tests that need it"
    );
}
