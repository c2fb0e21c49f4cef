//! `module = "oci://HOST/REPO@sha256:<hex>"`: one filter module from a registry, as a CNCF
//! Wasm artifact (config `application/vnd.wasm.config.v0+json`, one `application/wasm`
//! layer). The digest is required (a tag could move under a policy that did not change);
//! the module is fetched once, checked (manifest digest, layer digest and size, bounds) and
//! kept as `<cache>/modules/sha256-<manifest hex>.wasm`. `sluice bundle push-module` pushes one.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::registry::Registry;
use super::{BundleRef, Refusal, WASM_CONFIG_MEDIA_TYPE, WASM_MEDIA_TYPE};

static CACHE: OnceLock<PathBuf> = OnceLock::new();

/// Sets the cache directory (`sluice run --bundle-cache`); else [`super::follow::default_cache`].
pub fn set_cache(dir: PathBuf) {
    let _ = CACHE.set(dir);
}

fn cache() -> PathBuf {
    CACHE
        .get()
        .cloned()
        .unwrap_or_else(super::follow::default_cache)
}

/// Registries besides loopback ones spoken to in plain HTTP for modules
/// (`SLUICE_REGISTRY_INSECURE`, comma-separated `HOST:PORT`).
fn insecure() -> Vec<String> {
    std::env::var("SLUICE_REGISTRY_INSECURE")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default()
}

/// The local file of the module `reference` names, fetched into the cache if needed.
/// Blocking (the registry is spoken to on a thread of its own).
pub fn fetch(reference: &str) -> Result<PathBuf, String> {
    let r = BundleRef::parse(reference)?;
    let digest = r
        .pinned()
        .ok_or_else(|| format!("{reference}: a module from a registry needs its digest (oci://HOST/REPO@sha256:...)"))?
        .to_string();
    let path = cache()
        .join("modules")
        .join(format!("{}.wasm", digest.replace(':', "-")));
    if path.is_file() {
        return Ok(path);
    }
    let to = path.clone();
    std::thread::spawn(move || -> Result<PathBuf, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let registry = Registry::new(&r, &insecure());
        let data = rt
            .block_on(async {
                let (body, digest) = registry.resolve(&r.oci).await?;
                registry.pull_module(&r, &body, &digest).await
            })
            .map_err(|e| format!("{r}: {e}"))?;
        let dir = to.parent().expect("modules/");
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = to.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &data).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        Ok(to)
    })
    .join()
    .map_err(|_| "module fetch panicked".to_string())?
}

impl Registry {
    /// The one Wasm layer of a single-module artifact (manifest `body`, digest `digest`).
    pub async fn pull_module(
        &self,
        r: &BundleRef,
        body: &[u8],
        digest: &str,
    ) -> Result<Vec<u8>, Refusal> {
        let m: oci_client::manifest::OciImageManifest = serde_json::from_slice(body)
            .map_err(|e| Refusal::BadLayout(format!("manifest: {e}")))?;
        if m.config.media_type != WASM_CONFIG_MEDIA_TYPE {
            return Err(Refusal::BadLayout(format!(
                "config media type {:?}: not a Wasm module artifact",
                m.config.media_type
            )));
        }
        let [layer] = m.layers.as_slice() else {
            return Err(Refusal::BadLayout(format!(
                "{} layers, one expected",
                m.layers.len()
            )));
        };
        if layer.media_type != WASM_MEDIA_TYPE {
            return Err(Refusal::BadLayout(format!(
                "layer media type {:?}",
                layer.media_type
            )));
        }
        self.blob(&r.at_digest(digest), layer).await
    }

    /// Pushes `wasm` as a single-module Wasm artifact to `r`; returns the manifest digest.
    pub async fn push_module(&self, r: &BundleRef, wasm: &[u8]) -> Result<String, Refusal> {
        let layer = self
            .push_blob(&r.oci, WASM_MEDIA_TYPE, wasm, Default::default())
            .await?;
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "wasm",
            "os": "wasip1",
            "layerDigests": [super::digest_of(wasm)],
        }))
        .expect("JSON");
        let config = self
            .push_blob(&r.oci, WASM_CONFIG_MEDIA_TYPE, &config, Default::default())
            .await?;
        self.push_manifest(&r.oci, config, vec![layer]).await
    }
}
