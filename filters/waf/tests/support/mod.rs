//! What the CRS tests and the perf example share: the installed files a WAF may read.

use waf::load::FileSource;

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
