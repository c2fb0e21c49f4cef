//! A filter's `files`: paths and globs, relative to the policy file, read when the policy
//! loads and handed to the filter (`sluice.file.list` / `sluice.file.read`).

use std::path::Path;
use std::sync::Arc;

/// A file a policy grants a filter, read when the policy loads; the compile step
/// ([`crate::snapshot`]) hands it to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileGrant {
    /// Its name for the filter: the path as the policy wrote it (a glob's matches keep
    /// the glob's directory part as written), so relative names stay relative to the
    /// policy.
    pub name: String,
    /// Where it was read from.
    pub path: std::path::PathBuf,
    /// Its contents.
    pub data: Arc<[u8]>,
}

/// One entry of a filter's `files`: a path or glob (the filter sees it as written), or a
/// single file read from `path` that the filter sees as `name` (what a policy bundle's
/// copy of a policy says for a file packed under another name: `sluice bundle push`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum FileEntry {
    /// A path or glob, relative to the policy file.
    Pattern(String),
    /// One file read from `path` (taken literally: no glob) and shown to the filter as `name`.
    Named {
        /// Where it is read from, relative to the policy file.
        path: String,
        /// Its name for the filter.
        name: String,
    },
}

impl From<&str> for FileEntry {
    fn from(s: &str) -> Self {
        FileEntry::Pattern(s.to_string())
    }
}

impl From<String> for FileEntry {
    fn from(s: String) -> Self {
        FileEntry::Pattern(s)
    }
}

/// Most bytes of `files` one filter may hold.
pub const MAX_FILES_BYTES: usize = 32 << 20;

/// Reads the files `patterns` name (globs expand sorted, per pattern; a file named twice
/// keeps its first position). Errors name the pattern at fault.
pub fn load(base: &Path, patterns: &[FileEntry]) -> Result<Vec<FileGrant>, String> {
    let mut out: Vec<FileGrant> = Vec::new();
    let mut total = 0usize;
    for entry in patterns {
        let (pat, given) = match entry {
            FileEntry::Pattern(p) => (p, None),
            FileEntry::Named { path, name } => {
                if name.is_empty() {
                    return Err(format!(
                        "files: {{ path = {path:?}, name = \"\" }}: the name is empty"
                    ));
                }
                (path, Some(name.clone()))
            }
        };
        let full = base.join(pat);
        let full = full
            .to_str()
            .ok_or_else(|| format!("files: {pat:?} is not valid UTF-8"))?;
        let paths: Vec<std::path::PathBuf> = if given.is_none() && is_glob(pat) {
            let mut v = glob::glob(full)
                .map_err(|e| format!("files: bad glob {pat:?}: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("files: {pat:?}: {e}"))?;
            v.retain(|p| p.is_file());
            v.sort();
            if v.is_empty() {
                return Err(format!("files: {pat:?} matches no file"));
            }
            v
        } else {
            vec![full.into()]
        };
        for p in paths {
            // The name keeps the form written in the policy: relative names stay relative
            // (the filter resolves `Include`/`@pmFromFile` next to them), absolute stay absolute.
            let shown = if Path::new(pat).is_absolute() {
                p.as_path()
            } else {
                p.strip_prefix(base).unwrap_or(&p)
            };
            let name = given
                .clone()
                .unwrap_or_else(|| shown.to_string_lossy().into_owned());
            if out.iter().any(|f| f.path == p) {
                continue;
            }
            let meta = std::fs::metadata(&p).map_err(|e| format!("files: {name}: {e}"))?;
            if !meta.is_file() {
                return Err(format!("files: {name} is not a regular file"));
            }
            total = total.saturating_add(meta.len() as usize);
            if total > MAX_FILES_BYTES {
                return Err(format!(
                    "files: more than {} MiB in total (at {name})",
                    MAX_FILES_BYTES >> 20
                ));
            }
            let data = std::fs::read(&p).map_err(|e| format!("files: {name}: {e}"))?;
            out.push(FileGrant {
                name,
                data: Arc::from(data),
                path: p,
            });
        }
    }
    Ok(out)
}

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_expand_sorted_and_deduplicated() {
        let d = tempfile::tempdir().unwrap();
        for n in ["b.conf", "a.conf", "c.data"] {
            std::fs::write(d.path().join(n), n).unwrap();
        }
        let f = load(
            d.path(),
            &["b.conf".into(), "*.conf".into(), "*.data".into()],
        )
        .unwrap();
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["b.conf", "a.conf", "c.data"],
            "relative, as written"
        );
        assert_eq!(&*f[1].data, b"a.conf");
        assert_eq!(f[1].path, d.path().join("a.conf"));
        // Absolute patterns give absolute names.
        let abs = format!("{}/*.data", d.path().display());
        let f = load(Path::new("/elsewhere"), &[abs.into()]).unwrap();
        assert_eq!(f[0].name, d.path().join("c.data").to_str().unwrap());
        // A named entry is read from its path and shown under its name.
        let named = FileEntry::Named {
            path: "c.data".into(),
            name: "/usr/share/x/c.data".into(),
        };
        let f = load(d.path(), &[named]).unwrap();
        assert_eq!(f[0].name, "/usr/share/x/c.data");
        assert_eq!(&*f[0].data, b"c.data");
    }

    #[test]
    fn missing_files_and_empty_globs_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let e = load(d.path(), &["nope.conf".into()]).unwrap_err();
        assert!(e.contains("nope.conf") && e.contains("No such file"), "{e}");
        let e = load(d.path(), &["*.conf".into()]).unwrap_err();
        assert_eq!(e, "files: \"*.conf\" matches no file");
        std::fs::create_dir(d.path().join("dir")).unwrap();
        let e = load(d.path(), &["dir".into()]).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn the_total_is_capped_before_reading() {
        let d = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(d.path().join("big.data")).unwrap();
        f.set_len(MAX_FILES_BYTES as u64 + 1).unwrap();
        let e = load(d.path(), &["big.data".into()]).unwrap_err();
        assert!(e.contains("more than 32 MiB"), "{e}");
    }

    fn policy(dir: &Path, files: &str) -> Result<crate::policy::Policy, String> {
        let text = format!(
            "[pools.o]\npeers = [\"127.0.0.1:1\"]\n\n[filters.waf]\nmodule = \"x.wasm\"\nfiles = {files}\n\n[[routes]]\npool = \"o\"\nfilters = [\"waf\"]\n"
        );
        crate::policy::Policy::parse(&dir.join("p.toml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn policies_report_file_and_line_and_hash_the_contents() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("rules")).unwrap();
        std::fs::write(d.path().join("rules/a.conf"), "SecRule one").unwrap();
        let e = policy(d.path(), r#"["rules/*.conf", "rules/*.data"]"#).unwrap_err();
        assert!(
            e.ends_with("p.toml:6: filter \"waf\": files: \"rules/*.data\" matches no file"),
            "{e}"
        );
        let p = policy(d.path(), r#"["rules/*.conf"]"#).unwrap();
        let h1 = p.hash.clone();
        assert_eq!(p.filters[0].files.len(), 1);
        assert_eq!(&*p.filters[0].files[0].data, b"SecRule one");
        std::fs::write(d.path().join("rules/a.conf"), "SecRule two").unwrap();
        let h2 = policy(d.path(), r#"["rules/*.conf"]"#).unwrap().hash;
        assert_ne!(h1, h2, "a changed file is a new policy");
    }
}
