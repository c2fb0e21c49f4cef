//! Pushing and pulling bundles through `oci-client`. A tag is resolved to a manifest once
//! (the manifest's digest is computed from the bytes received); the blobs are then read by
//! digest, so a tag moved during a pull cannot mix two generations. Every blob is bounded
//! by its descriptor's size and [`super::MAX_BLOB_BYTES`], and checked against its digest.
//!
//! Registries on loopback (`localhost`, `127.0.0.0/8`, `[::1]`) and those named in
//! `insecure` are spoken to in plain HTTP; every other one over HTTPS (rustls, ring).
//! Credentials, when the registry wants them: `SLUICE_REGISTRY_USERNAME` and
//! `SLUICE_REGISTRY_PASSWORD`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::pack::Packed;
use super::sign::{self, SigningKey, VerifyKey};
use super::{
    digest_of, BundleRef, Refusal, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, MAX_BLOB_BYTES,
    MAX_BUNDLE_BYTES, MAX_LAYERS, MAX_MANIFEST_BYTES, TITLE,
};

/// A client for `bundle`'s registry.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
}

/// True for `localhost`, loopback addresses, with or without a port.
fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An OCI image manifest's bytes.
fn manifest_bytes(config: serde_json::Value, layers: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config,
        "layers": layers,
    }))
    .expect("JSON")
}

/// What a pull gives: the manifest digest and the files by title.
#[derive(Debug)]
pub struct Pulled {
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    /// (title, bytes), the policy among them.
    pub files: Vec<(String, Vec<u8>)>,
}

/// A registry error saying the manifest is not there (a signature tag never pushed).
fn is_not_found(e: &str) -> bool {
    let e = e.to_ascii_lowercase();
    e.contains("404")
        || e.contains("not found")
        || e.contains("manifest unknown")
        || e.contains("manifest_unknown")
}

fn registry_err(e: OciDistributionError) -> Refusal {
    match e {
        OciDistributionError::DigestError(d) => Refusal::DigestMismatch(d.to_string()),
        other => Refusal::Registry(other.to_string()),
    }
}

impl Registry {
    /// A client for the registry of `r`: plain HTTP on loopback or when listed in `insecure`.
    pub fn new(r: &BundleRef, insecure: &[String]) -> Registry {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let plain = is_loopback(r.registry()) || insecure.iter().any(|h| h == r.registry());
        let client = Client::new(ClientConfig {
            protocol: if plain {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(Duration::from_secs(5)),
            read_timeout: Some(Duration::from_secs(30)),
            platform_resolver: None,
            ..Default::default()
        });
        let auth = match (
            std::env::var("SLUICE_REGISTRY_USERNAME"),
            std::env::var("SLUICE_REGISTRY_PASSWORD"),
        ) {
            (Ok(u), Ok(p)) => RegistryAuth::Basic(u, p),
            _ => RegistryAuth::Anonymous,
        };
        Registry { client, auth }
    }

    async fn login(&self, r: &Reference) {
        self.client
            .store_auth_if_needed(r.resolve_registry(), &self.auth)
            .await;
    }

    /// Pushes a blob unless the registry has it; returns its descriptor.
    pub async fn push_blob(
        &self,
        r: &Reference,
        media_type: &str,
        data: &[u8],
        annotations: BTreeMap<String, String>,
    ) -> Result<serde_json::Value, Refusal> {
        let digest = digest_of(data);
        if !self
            .client
            .blob_exists(r, &digest)
            .await
            .map_err(registry_err)?
        {
            self.client
                .push_blob(r, data.to_vec(), &digest)
                .await
                .map_err(registry_err)?;
        }
        let mut d = serde_json::json!({
            "mediaType": media_type,
            "digest": digest,
            "size": data.len(),
        });
        if !annotations.is_empty() {
            d["annotations"] = serde_json::to_value(annotations).expect("JSON");
        }
        Ok(d)
    }

    /// Pushes an OCI manifest with `config` and `layers` (descriptors from
    /// [`Registry::push_blob`]) to `r` (a tag or a digest); returns its digest.
    pub async fn push_manifest(
        &self,
        r: &Reference,
        config: serde_json::Value,
        layers: Vec<serde_json::Value>,
    ) -> Result<String, Refusal> {
        let bytes = manifest_bytes(config, layers);
        let digest = digest_of(&bytes);
        self.put_manifest(r, bytes).await?;
        Ok(digest)
    }

    async fn put_manifest(&self, r: &Reference, bytes: Vec<u8>) -> Result<(), Refusal> {
        self.client
            .push_manifest_raw(
                r,
                bytes,
                http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
            )
            .await
            .map_err(registry_err)?;
        Ok(())
    }

    /// Pushes a packed policy to `r`'s tag (or digest); signs it with `key` when given.
    /// The manifest goes up by digest first, then its signature, and only then does the
    /// tag move: a node polling the tag never sees the new generation unsigned.
    /// Returns the manifest digest.
    pub async fn push(
        &self,
        r: &BundleRef,
        packed: &Packed,
        key: Option<&SigningKey>,
    ) -> Result<String, Refusal> {
        self.login(&r.oci).await;
        let config = self
            .push_blob(
                &r.oci,
                CONFIG_MEDIA_TYPE,
                br#"{"policy":"policy.toml"}"#,
                BTreeMap::new(),
            )
            .await?;
        let mut layers = Vec::new();
        for l in &packed.layers {
            let annotations = BTreeMap::from([(TITLE.to_string(), l.title.clone())]);
            layers.push(
                self.push_blob(&r.oci, l.media_type, &l.data, annotations)
                    .await?,
            );
        }
        let bytes = manifest_bytes(config, layers);
        let digest = digest_of(&bytes);
        self.put_manifest(&r.at_digest(&digest), bytes.clone())
            .await?;
        if let Some(key) = key {
            self.sign(r, &digest, key).await?;
        }
        if r.pinned().is_none() {
            self.put_manifest(&r.oci, bytes).await?;
        }
        Ok(digest)
    }

    /// Writes cosign's signature of `digest` (tag `sha256-<hex>.sig`).
    pub async fn sign(&self, r: &BundleRef, digest: &str, key: &SigningKey) -> Result<(), Refusal> {
        let payload = sign::payload(&r.repository(), digest);
        let sig = key.sign(&payload).map_err(Refusal::BadSignature)?;
        use base64::Engine;
        let annotations = BTreeMap::from([(
            sign::SIGNATURE_ANNOTATION.to_string(),
            base64::engine::general_purpose::STANDARD.encode(sig),
        )]);
        let target = r.at_tag(&sign::signature_tag(digest));
        self.login(&target).await;
        let layer = self
            .push_blob(&target, sign::PAYLOAD_MEDIA_TYPE, &payload, annotations)
            .await?;
        let image_config = serde_json::to_vec(&serde_json::json!({
            "architecture": "", "os": "", "config": {},
            "rootfs": { "type": "layers", "diff_ids": [digest_of(&payload)] },
        }))
        .expect("JSON");
        let config = self
            .push_blob(
                &target,
                "application/vnd.oci.image.config.v1+json",
                &image_config,
                BTreeMap::new(),
            )
            .await?;
        self.push_manifest(&target, config, vec![layer]).await?;
        Ok(())
    }

    /// The manifest `r` names now, with its digest (computed from the bytes; a pinned
    /// reference must match it).
    pub async fn resolve(&self, r: &Reference) -> Result<(Vec<u8>, String), Refusal> {
        self.login(r).await;
        let (body, _) = self
            .client
            .pull_manifest_raw(r, &self.auth, &[MANIFEST_MEDIA_TYPE])
            .await
            .map_err(registry_err)?;
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(Refusal::TooLarge(format!(
                "manifest of {} bytes (at most {MAX_MANIFEST_BYTES})",
                body.len()
            )));
        }
        let digest = digest_of(&body);
        if let Some(pinned) = r.digest() {
            if pinned != digest {
                return Err(Refusal::DigestMismatch(format!(
                    "asked for {pinned}, the registry sent {digest}"
                )));
            }
        }
        Ok((body.to_vec(), digest))
    }

    /// Reads one blob, bounded by its descriptor (and `MAX_BLOB_BYTES`), checked against
    /// its digest.
    pub(crate) async fn blob(&self, r: &Reference, d: &OciDescriptor) -> Result<Vec<u8>, Refusal> {
        let size = u64::try_from(d.size)
            .map_err(|_| Refusal::BadLayout(format!("{}: negative size", d.digest)))?;
        if size > MAX_BLOB_BYTES {
            return Err(Refusal::TooLarge(format!(
                "blob {} declares {size} bytes (at most {MAX_BLOB_BYTES})",
                d.digest
            )));
        }
        let mut stream = self
            .client
            .pull_blob_stream(r, d)
            .await
            .map_err(registry_err)?;
        if stream.content_length.is_some_and(|n| n > size) {
            return Err(Refusal::DigestMismatch(format!(
                "blob {} is {} bytes, its descriptor says {size}",
                d.digest,
                stream.content_length.unwrap_or_default()
            )));
        }
        let mut data = Vec::with_capacity(size as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                if e.to_string().to_ascii_lowercase().contains("digest") {
                    Refusal::DigestMismatch(format!("blob {}: {e}", d.digest))
                } else {
                    Refusal::Registry(format!("blob {}: {e}", d.digest))
                }
            })?;
            if (data.len() + chunk.len()) as u64 > size {
                return Err(Refusal::DigestMismatch(format!(
                    "blob {} is longer than its descriptor's {size} bytes",
                    d.digest
                )));
            }
            data.extend_from_slice(&chunk);
        }
        let got = digest_of(&data);
        if got != d.digest || data.len() as u64 != size {
            return Err(Refusal::DigestMismatch(format!(
                "blob {} has digest {got} ({} bytes, {size} declared)",
                d.digest,
                data.len()
            )));
        }
        Ok(data)
    }

    /// Pulls the bundle whose manifest (`body`, digest `digest`) came from
    /// [`Registry::resolve`]: layout and sizes checked before any blob is read.
    pub async fn pull(&self, r: &BundleRef, body: &[u8], digest: &str) -> Result<Pulled, Refusal> {
        let m: OciImageManifest = serde_json::from_slice(body)
            .map_err(|e| Refusal::BadLayout(format!("manifest: {e}")))?;
        if m.config.media_type != CONFIG_MEDIA_TYPE {
            return Err(Refusal::BadLayout(format!(
                "config media type {:?}: not a Sluice policy bundle",
                m.config.media_type
            )));
        }
        if m.layers.len() > MAX_LAYERS {
            return Err(Refusal::TooLarge(format!("{} layers", m.layers.len())));
        }
        let total: i64 = m.layers.iter().map(|l| l.size.max(0)).sum();
        if total as u64 > MAX_BUNDLE_BYTES {
            return Err(Refusal::TooLarge(format!(
                "{total} bytes of layers (at most {MAX_BUNDLE_BYTES})"
            )));
        }
        let mut titles = Vec::new();
        for l in &m.layers {
            let title = l
                .annotations
                .as_ref()
                .and_then(|a| a.get(TITLE))
                .ok_or_else(|| Refusal::BadLayout(format!("layer {} has no title", l.digest)))?;
            super::unpack::check_title(title)?;
            titles.push(title.clone());
        }
        let at = r.at_digest(digest);
        let mut files = Vec::new();
        for (l, title) in m.layers.iter().zip(titles) {
            files.push((title, self.blob(&at, l).await?));
        }
        Ok(Pulled {
            digest: digest.to_string(),
            files,
        })
    }

    /// Checks cosign signatures of `digest` with `key`; returns the signer (key id).
    pub async fn verify(
        &self,
        r: &BundleRef,
        digest: &str,
        key: &VerifyKey,
    ) -> Result<String, Refusal> {
        let tag = r.at_tag(&sign::signature_tag(digest));
        let (body, _) = match self.resolve(&tag).await {
            Ok(found) => found,
            Err(Refusal::Registry(e)) if is_not_found(&e) => {
                return Err(Refusal::Unsigned(format!(
                    "no signature at {}",
                    sign::signature_tag(digest)
                )))
            }
            Err(e) => return Err(e),
        };
        let m: OciImageManifest = serde_json::from_slice(&body)
            .map_err(|e| Refusal::BadSignature(format!("signature manifest: {e}")))?;
        let mut last = Refusal::Unsigned(format!(
            "no {} layer at {}",
            sign::PAYLOAD_MEDIA_TYPE,
            sign::signature_tag(digest)
        ));
        for l in m
            .layers
            .iter()
            .filter(|l| l.media_type == sign::PAYLOAD_MEDIA_TYPE)
            .take(16)
        {
            let Some(sig) = l
                .annotations
                .as_ref()
                .and_then(|a| a.get(sign::SIGNATURE_ANNOTATION))
            else {
                continue;
            };
            if l.size > 64 << 10 {
                continue;
            }
            let payload = self.blob(&tag, l).await?;
            match key.check(&payload, sig, digest) {
                Ok(()) => return Ok(key.id()),
                // A signature by our key for another digest says more than one by another key.
                Err(e @ Refusal::WrongDigest(_)) => last = e,
                Err(e) if !matches!(last, Refusal::WrongDigest(_)) => last = e,
                Err(_) => {}
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_registries() {
        for yes in [
            "localhost:5000",
            "127.0.0.1:25000",
            "[::1]:5000",
            "127.0.0.2",
        ] {
            assert!(super::is_loopback(yes), "{yes}");
        }
        for no in ["registry.example:5000", "10.0.0.1:5000", "ghcr.io"] {
            assert!(!super::is_loopback(no), "{no}");
        }
    }
}
