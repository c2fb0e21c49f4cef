//! Trust checks of the on-disk module cache. Its files are native code that wasmtime
//! maps and runs without validating it again, so they must come from a directory only
//! Sluice's own user can write: owned by the user Sluice runs as and writable by neither
//! group nor others (the rules OpenSSH applies to `~/.ssh`). Sluice creates the
//! directory with mode 0700 and its files with 0600; anything else is refused, logged,
//! counted, and the module is compiled without the cache.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Cache directories or entries refused since start (not ours, or writable by others).
pub static CACHE_REFUSALS: AtomicU64 = AtomicU64::new(0);

/// Why a cache directory or file is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    /// Owned by another user.
    #[error("owned by uid {owner}, not by uid {me} that Sluice runs as")]
    Owner {
        /// The owner.
        owner: u32,
        /// The running user.
        me: u32,
    },
    /// Writable by group or others.
    #[error("mode {mode:04o} lets group or others write it (want 0700 for the directory, 0600 for files)")]
    Writable {
        /// The permission bits.
        mode: u32,
    },
    /// Not a directory, or a file that is not a regular file (a symlink, a device).
    #[error("not a {0}")]
    Kind(&'static str),
    /// Cannot be created or inspected.
    #[error("{0}")]
    Io(String),
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn check(meta: &std::fs::Metadata) -> Result<(), Untrusted> {
    let me = euid();
    if meta.uid() != me {
        return Err(Untrusted::Owner {
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Untrusted::Writable { mode });
    }
    Ok(())
}

/// Creates the cache directory (mode 0700, parents too) when it is missing, then checks
/// that it is a directory of the running user that group and others cannot write.
pub fn open_dir(dir: &Path) -> Result<(), Untrusted> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Untrusted::Io(format!("cannot create it: {e}")))?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| Untrusted::Io(e.to_string()))?;
    if !meta.is_dir() {
        return Err(Untrusted::Kind("directory"));
    }
    check(&meta)
}

/// Checks a cache entry before it is loaded: a regular file (not a symlink) of the
/// running user that group and others cannot write.
pub fn check_file(file: &Path) -> Result<(), Untrusted> {
    let meta = std::fs::symlink_metadata(file).map_err(|e| Untrusted::Io(e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(Untrusted::Kind("regular file"));
    }
    check(&meta)
}

/// Writes a cache entry: to a temporary file of mode 0600 first, renamed into place.
pub fn write(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|_| std::fs::rename(&tmp, file));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Counts and logs a refusal; the caller compiles without the cache.
pub fn refused(path: &Path, why: &Untrusted) {
    CACHE_REFUSALS.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        path = %path.display(),
        reason = %why,
        "module cache refused: compiling without it (fix with chmod 700 / chown, or set SLUICE_CACHE_DIR)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_missing_directory_is_created_0700_and_trusted() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a/b");
        open_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn directories_and_files_others_can_write_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let set = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        set(t.path(), 0o777).unwrap();
        assert_eq!(open_dir(t.path()), Err(Untrusted::Writable { mode: 0o777 }));
        set(t.path(), 0o755).unwrap();
        assert_eq!(open_dir(t.path()), Ok(()));
        let f = t.path().join("m.cwasm");
        write(&f, b"x").unwrap();
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(check_file(&f), Ok(()));
        set(&f, 0o666).unwrap();
        assert_eq!(check_file(&f), Err(Untrusted::Writable { mode: 0o666 }));
        let link = t.path().join("l.cwasm");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert_eq!(check_file(&link), Err(Untrusted::Kind("regular file")));
    }
}
