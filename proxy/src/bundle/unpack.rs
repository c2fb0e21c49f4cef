//! Layers into the content-addressed cache: `<cache>/bundles/sha256-<hex>/` per manifest
//! digest, written in a temporary directory and renamed into place (a directory that
//! exists is complete). Titles are checked before anything is written: relative, plain
//! components only (no `..`, no `.`, no root, no backslash or NUL), unique.

use std::path::{Component, Path, PathBuf};

use super::{Refusal, POLICY_TITLE};

/// Longest title accepted.
const MAX_TITLE: usize = 1024;

/// Checks a layer title names a file inside the bundle.
pub fn check_title(title: &str) -> Result<(), Refusal> {
    let bad = |why: &str| Err(Refusal::BadLayout(format!("layer title {title:?}: {why}")));
    if title.is_empty() || title.len() > MAX_TITLE {
        return bad("empty or too long");
    }
    if title.contains(['\\', '\0']) {
        return bad("backslash or NUL");
    }
    let p = Path::new(title);
    if p.is_absolute() {
        return bad("absolute path");
    }
    for c in p.components() {
        match c {
            Component::Normal(_) => {}
            _ => return bad("only plain relative components (no .., no .)"),
        }
    }
    if title.ends_with('/') || title.contains("//") {
        return bad("empty component");
    }
    Ok(())
}

/// Checks that the policy of a bundle (its text) reads its modules and granted files from
/// the bundle only: plain relative paths (or a module by digest, `oci://...@sha256:`). What
/// belongs to the node (TLS keys, token and CA files, the access log) may be anywhere.
pub fn check_contained(policy: &str) -> Result<(), Refusal> {
    let table: toml::Table = match policy.parse() {
        Ok(t) => t,
        // Not TOML: validation says why, with the line.
        Err(_) => return Ok(()),
    };
    let Some(filters) = table.get("filters").and_then(|f| f.as_table()) else {
        return Ok(());
    };
    let outside = |name: &str, what: &str, path: &str| {
        Refusal::BadLayout(format!(
            "filter {name:?}: {what} {path:?} is outside the bundle (a bundle reads its modules and files from itself)"
        ))
    };
    for (name, f) in filters {
        if let Some(m) = f.get("module").and_then(|m| m.as_str()) {
            if !super::BundleRef::is_bundle(m) && check_title(m).is_err() {
                return Err(outside(name, "module", m));
            }
        }
        for entry in f
            .get("files")
            .and_then(|f| f.as_array())
            .into_iter()
            .flatten()
        {
            let path = entry
                .as_str()
                .or_else(|| entry.get("path").and_then(|p| p.as_str()))
                .unwrap_or("");
            if check_title(path).is_err() {
                return Err(outside(name, "file", path));
            }
        }
    }
    Ok(())
}

/// The directory of the bundle with manifest digest `digest` under `cache`.
pub fn bundle_dir(cache: &Path, digest: &str) -> PathBuf {
    cache.join("bundles").join(digest.replace(':', "-"))
}

/// Writes `files` (title, bytes) as the bundle `digest` under `cache`, unless it is there
/// already; returns its directory. The policy is at `<dir>/policy.toml`.
pub fn unpack(cache: &Path, digest: &str, files: &[(String, Vec<u8>)]) -> Result<PathBuf, Refusal> {
    let mut seen = std::collections::HashSet::new();
    for (title, _) in files {
        check_title(title)?;
        if !seen.insert(title.as_str()) {
            return Err(Refusal::BadLayout(format!("layer title {title:?} twice")));
        }
    }
    if !seen.contains(POLICY_TITLE) {
        return Err(Refusal::BadLayout(format!("no {POLICY_TITLE} layer")));
    }
    let dir = bundle_dir(cache, digest);
    if dir.join(POLICY_TITLE).is_file() {
        return Ok(dir);
    }
    let io = |e: std::io::Error| Refusal::Registry(format!("cache {}: {e}", cache.display()));
    let parent = cache.join("bundles");
    std::fs::create_dir_all(&parent).map_err(io)?;
    let tmp = parent.join(format!(
        ".tmp-{}-{}",
        digest.replace(':', "-"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(io)?;
    for (title, data) in files {
        let to = tmp.join(title);
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p).map_err(io)?;
        }
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&to)
            .map_err(io)?;
        f.write_all(data).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process put the same bundle there first: same digest, same content.
        Err(_) if dir.join(POLICY_TITLE).is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(io(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_stay_inside_the_bundle() {
        for ok in ["policy.toml", "ext/root/usr/share/x.conf", "waf/a.conf"] {
            check_title(ok).unwrap();
        }
        for bad in [
            "",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "./a",
            "a\\..\\b",
            "a//b",
            "a/",
        ] {
            assert!(check_title(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bundled_policies_read_only_from_the_bundle() {
        let ok = "[filters.a]\nmodule = \"ext/up/a.wasm\"\nfiles = [\"r.conf\", { path = \"ext/root/etc/x\", name = \"/etc/x\" }]\n[tls]\nlisten = []\n";
        check_contained(ok).unwrap();
        for bad in [
            "[filters.a]\nmodule = \"/usr/lib/x.wasm\"\n",
            "[filters.a]\nmodule = \"a.wasm\"\nfiles = [\"/etc/shadow\"]\n",
            "[filters.a]\nmodule = \"a.wasm\"\nfiles = [{ path = \"../../x\", name = \"x\" }]\n",
            "[filters.a]\nmodule = \"a.wasm\"\nfiles = [\"*.conf\", \"../*.conf\"]\n",
        ] {
            assert!(
                matches!(check_contained(bad), Err(Refusal::BadLayout(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn unpacks_once_per_digest() {
        let d = tempfile::tempdir().unwrap();
        let files = vec![
            ("policy.toml".to_string(), b"x".to_vec()),
            ("a/b.conf".to_string(), b"y".to_vec()),
        ];
        let dir = unpack(d.path(), "sha256:ab", &files).unwrap();
        assert_eq!(std::fs::read(dir.join("a/b.conf")).unwrap(), b"y");
        assert_eq!(unpack(d.path(), "sha256:ab", &files).unwrap(), dir);
        let evil = vec![
            ("policy.toml".to_string(), b"x".to_vec()),
            ("../evil".to_string(), b"y".to_vec()),
        ];
        assert!(matches!(
            unpack(d.path(), "sha256:cd", &evil),
            Err(Refusal::BadLayout(_))
        ));
        assert!(!d.path().join("bundles/evil").exists());
    }
}
