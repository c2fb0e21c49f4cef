//! Policy bundles (issue #20): a policy, every module it names and every file it grants,
//! as one OCI artifact in a registry.
//!
//! - [`pack`]: a policy on disk into layers, the bundled copy of the policy rewritten to
//!   name what was packed from outside its directory under stable names.
//! - [`registry`]: pushing and pulling through `oci-client` (tag resolved once, everything
//!   else by digest; every digest and size checked, sizes bounded).
//! - [`unpack`]: layers into a content-addressed cache directory, titles checked.
//! - [`sign`]: cosign's key-based signatures (ECDSA P-256 over the simple-signing payload).
//! - [`module`]: `module = "oci://HOST/REPO@sha256:..."`, one filter module by digest.
//! - [`follow`]: `sluice run --policy oci://...`: the first fetch, the offline start from the
//!   cache, polling the tag and swapping through [`crate::swap::Control`], status.

pub mod follow;
pub mod module;
pub mod pack;
pub mod reference;
pub mod registry;
pub mod sign;
pub mod unpack;

pub use reference::BundleRef;

/// The bundle manifest's config media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.sluice.bundle.config.v1+json";
/// The policy layer's media type.
pub const POLICY_MEDIA_TYPE: &str = "application/vnd.sluice.policy.v1+toml";
/// A granted file's media type.
pub const FILE_MEDIA_TYPE: &str = "application/vnd.sluice.file.v1";
/// Wasm layers (CNCF Wasm OCI artifact).
pub const WASM_MEDIA_TYPE: &str = "application/wasm";
/// The config of a single-module Wasm artifact (CNCF Wasm OCI artifact).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// OCI image manifests.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The annotation naming a layer's path in the bundle.
pub const TITLE: &str = "org.opencontainers.image.title";
/// The title of the policy layer.
pub const POLICY_TITLE: &str = "policy.toml";

/// Most bytes of one blob (layer or config).
pub const MAX_BLOB_BYTES: u64 = 64 << 20;
/// Most bytes of all blobs of one bundle.
pub const MAX_BUNDLE_BYTES: u64 = 256 << 20;
/// Most bytes of a manifest.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// Most layers of one bundle.
pub const MAX_LAYERS: usize = 4096;

/// Why a bundle was not taken; [`Refusal::reason`] is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The registry could not be reached or answered an error: not the bundle's fault.
    #[error("registry: {0}")]
    Registry(String),
    /// A blob or manifest whose content does not match its digest or declared size.
    #[error("digest mismatch: {0}")]
    DigestMismatch(String),
    /// Beyond the size bounds.
    #[error("too large: {0}")]
    TooLarge(String),
    /// Not a Sluice bundle, or unsafe layer titles.
    #[error("bad bundle layout: {0}")]
    BadLayout(String),
    /// No signature while `verify_key` is set.
    #[error("unsigned: {0}")]
    Unsigned(String),
    /// Signatures exist but none verifies with the key.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// A valid signature for another manifest digest.
    #[error("signature for another digest: {0}")]
    WrongDigest(String),
    /// The policy in the bundle failed validation.
    #[error("invalid policy: {0}")]
    Invalid(String),
}

impl Refusal {
    /// The `reason` label of `sluice_bundle_refusals_total` (`None`: a registry error,
    /// counted as a failed fetch, not a refusal of the bundle).
    pub fn reason(&self) -> Option<&'static str> {
        Some(match self {
            Refusal::Registry(_) => return None,
            Refusal::DigestMismatch(_) => "digest_mismatch",
            Refusal::TooLarge(_) => "too_large",
            Refusal::BadLayout(_) => "bad_layout",
            Refusal::Unsigned(_) => "unsigned",
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::WrongDigest(_) => "wrong_digest",
            Refusal::Invalid(_) => "invalid",
        })
    }
}

/// Hex SHA-256 of `data` as an OCI digest (`sha256:<hex>`).
pub fn digest_of(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}
