//! What the WAF's tests and the perf example share: the installed files a WAF may read,
//! and the response phases run as the filter runs them.
// Each test crate and the example use part of it.
#![allow(dead_code)]

use std::path::Path;

use waf::load::FileSource;
use waf::tx::Transaction;

/// The files of Debian's CRS, its `crs-setup.conf` and ModSecurity's base config (with
/// the unicode map), read from where the packages install them.
pub struct Fs;

impl FileSource for Fs {
    fn list(&self) -> Vec<String> {
        let mut out = Vec::new();
        for dir in [
            "/usr/share/modsecurity-crs/rules",
            "/etc/modsecurity/crs",
            "/etc/nginx",
        ] {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    out.push(e.path().to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|e| e.to_string())
    }
}

/// The response phases as the filter runs them: 3 on the head; 4 on the body when it is
/// inspected (its first `SecResponseBodyLimit` bytes; else on the head alone); then 5.
pub fn respond(tx: &mut Transaction, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tx.set_response(status, "HTTP/1.1", &hs);
    tx.run_phase(3);
    if tx.wants_response_body() {
        let (limit, _) = tx.response_body_limit();
        let n = body.len().min(limit);
        tx.process_response_body(&body[..n], body.len() > limit);
    }
    tx.run_phase(4);
    tx.run_phase(5);
}

/// Whether `path` (a file of Debian's CRS or ModSecurity packages) is installed. Missing,
/// the test fails unless `SLUICE_TEST_ALLOW_SKIP` names `crs` (or is `all`), as the
/// proxy's suite does; then it prints `SKIPPED` and the caller returns.
#[track_caller]
pub fn installed(path: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    let allowed = std::env::var("SLUICE_TEST_ALLOW_SKIP")
        .is_ok_and(|v| v.split(',').any(|w| w.trim() == "crs" || w.trim() == "all"));
    if allowed {
        eprintln!("SKIPPED: {path} is missing and SLUICE_TEST_ALLOW_SKIP allows it");
        return false;
    }
    panic!(
        "{path} is missing: run scripts/setup.sh (Debian's modsecurity-crs), or set \
         SLUICE_TEST_ALLOW_SKIP=crs to skip the tests that need it"
    );
}
