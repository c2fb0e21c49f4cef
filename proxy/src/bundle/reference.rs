//! `oci://HOST/REPO:TAG` and `oci://HOST/REPO@sha256:<hex>`.

use std::fmt;

/// A bundle's place in a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRef {
    /// The OCI reference (registry, repository, tag or digest).
    pub oci: oci_client::Reference,
}

/// The scheme a bundle reference starts with.
pub const SCHEME: &str = "oci://";

impl BundleRef {
    /// Parses `oci://HOST/REPO:TAG` or `oci://HOST/REPO@sha256:<hex>`.
    pub fn parse(s: &str) -> Result<BundleRef, String> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("{s:?}: a bundle reference starts with oci://"))?;
        if !rest.contains('/') {
            return Err(format!(
                "{s:?}: expected oci://HOST/REPO:TAG or @sha256:..."
            ));
        }
        let oci: oci_client::Reference = rest.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if let Some(d) = oci.digest() {
            let hex = d.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{s:?}: only sha256 digests are accepted"));
            }
        }
        Ok(BundleRef { oci })
    }

    /// True when `s` names a bundle rather than a file.
    pub fn is_bundle(s: &str) -> bool {
        s.starts_with(SCHEME)
    }

    /// Pinned to a digest: never moves, never polled.
    pub fn pinned(&self) -> Option<&str> {
        self.oci.digest()
    }

    /// The registry host (and port).
    pub fn registry(&self) -> &str {
        self.oci.registry()
    }

    /// `HOST/REPO`, without tag or digest (cosign's `docker-reference`).
    pub fn repository(&self) -> String {
        format!("{}/{}", self.oci.registry(), self.oci.repository())
    }

    /// The same repository at `digest`.
    pub fn at_digest(&self, digest: &str) -> oci_client::Reference {
        oci_client::Reference::with_digest(
            self.oci.registry().to_string(),
            self.oci.repository().to_string(),
            digest.to_string(),
        )
    }

    /// The same repository at `tag`.
    pub fn at_tag(&self, tag: &str) -> oci_client::Reference {
        oci_client::Reference::with_tag(
            self.oci.registry().to_string(),
            self.oci.repository().to_string(),
            tag.to_string(),
        )
    }

    /// A file name for this reference in the cache (`refs/`): no separators, and one name
    /// per reference (every byte other than ASCII letters, digits, `.` and `-` is written
    /// `_XX` in hex, `_` itself included, so `a/b` and `a_b` never share a file).
    pub fn cache_key(&self) -> String {
        use std::fmt::Write;
        let text = self.to_string();
        let mut key = String::with_capacity(text.len() + 8);
        for b in text.trim_start_matches(SCHEME).bytes() {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
                key.push(b as char);
            } else {
                let _ = write!(key, "_{b:02x}");
            }
        }
        key
    }
}

impl fmt::Display for BundleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/{}",
            self.oci.registry(),
            self.oci.repository()
        )?;
        if let Some(d) = self.oci.digest() {
            write!(f, "@{d}")
        } else {
            write!(f, ":{}", self.oci.tag().unwrap_or("latest"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_digests_parse() {
        let r = BundleRef::parse("oci://127.0.0.1:5000/edge/policy:v1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "127.0.0.1:5000/edge/policy");
        assert_eq!(r.pinned(), None);
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/edge/policy:v1");
        assert_eq!(r.cache_key(), "127.0.0.1_3a5000_2fedge_2fpolicy_3av1");
        // Distinct references never share a cache file.
        let a = BundleRef::parse("oci://h:5000/a_b:v1").unwrap().cache_key();
        let b = BundleRef::parse("oci://h:5000/a/b:v1").unwrap().cache_key();
        assert_ne!(a, b);
        let d = format!("sha256:{}", "a".repeat(64));
        let r = BundleRef::parse(&format!("oci://localhost:5000/p@{d}")).unwrap();
        assert_eq!(r.pinned(), Some(d.as_str()));
        assert!(BundleRef::parse("localhost:5000/p:v1").is_err());
        assert!(BundleRef::parse("oci://localhost:5000/p@sha256:abc").is_err());
    }
}
