//! cosign's key-based signatures: an ECDSA P-256 (SHA-256, ASN.1 DER) signature over the
//! simple-signing payload that names the manifest digest, stored as cosign stores it: an
//! OCI manifest at tag `sha256-<hex>.sig` in the same repository whose layers are payloads
//! (`application/vnd.dev.cosign.simplesigning.v1+json`) with the base64 signature in the
//! `dev.cosignproject.cosign/signature` annotation. Keys are PEM: a PKCS#8 `PRIVATE KEY`
//! to sign (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`), the
//! `PUBLIC KEY` (SubjectPublicKeyInfo, as `cosign.pub`) to verify. Crypto: ring.

use base64::Engine;
use ring::signature::{self, KeyPair};

use super::Refusal;

/// The signature layer's media type.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The simple-signing payload's `critical.type`.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, BIT STRING).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The tag cosign stores the signatures of manifest `digest` under.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// The simple-signing payload for `digest` in `repository` (`HOST/REPO`).
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": { "docker-reference": repository },
            "image": { "docker-manifest-digest": digest },
            "type": PAYLOAD_TYPE,
        },
        "optional": null,
    }))
    .expect("JSON")
}

fn pem_body(pem: &str, label: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem
        .find(&begin)
        .ok_or_else(|| format!("no {begin} block"))?
        + begin.len();
    let stop = pem[start..].find(&end).ok_or_else(|| format!("no {end}"))? + start;
    let b64: String = pem[start..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("{label}: {e}"))
}

/// Who signed: `sha256:<hex>` of the public key's SubjectPublicKeyInfo (DER).
fn key_id(spki: &[u8]) -> String {
    super::digest_of(spki)
}

/// A P-256 key that signs bundles.
pub struct SigningKey {
    pair: signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl SigningKey {
    /// Reads a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) P-256 key.
    pub fn from_pem(pem: &str) -> Result<SigningKey, String> {
        let der = pem_body(pem, "PRIVATE KEY")?;
        let rng = ring::rand::SystemRandom::new();
        let pair = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &der,
            &rng,
        )
        .map_err(|e| format!("not a PKCS#8 P-256 key: {e}"))?;
        Ok(SigningKey { pair, rng })
    }

    /// Signs `msg` (DER signature).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        self.pair
            .sign(&self.rng, msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| format!("signing: {e}"))
    }

    /// The matching public key.
    pub fn public(&self) -> VerifyKey {
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(self.pair.public_key().as_ref());
        VerifyKey { spki }
    }
}

/// A P-256 public key bundles must be signed with (`verify_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyKey {
    spki: Vec<u8>,
}

impl VerifyKey {
    /// Reads a `-----BEGIN PUBLIC KEY-----` PEM P-256 key (cosign's `cosign.pub`).
    pub fn from_pem(pem: &str) -> Result<VerifyKey, String> {
        let spki = pem_body(pem, "PUBLIC KEY")?;
        if spki.len() != P256_SPKI_PREFIX.len() + 65 || !spki.starts_with(&P256_SPKI_PREFIX) {
            return Err("not an ECDSA P-256 public key (SubjectPublicKeyInfo)".into());
        }
        Ok(VerifyKey { spki })
    }

    /// The key as PEM.
    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.spki);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    /// `sha256:<hex>` of the key (the `signer` in status and metrics).
    pub fn id(&self) -> String {
        key_id(&self.spki)
    }

    fn verifies(&self, msg: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_ASN1,
            &self.spki[P256_SPKI_PREFIX.len()..],
        )
        .verify(msg, sig)
        .is_ok()
    }

    /// Checks one signature layer (payload bytes and its base64 signature annotation)
    /// against manifest `digest`: the key must verify it and the payload must name `digest`.
    pub fn check(&self, payload: &[u8], signature_b64: &str, digest: &str) -> Result<(), Refusal> {
        let sig = base64::engine::general_purpose::STANDARD
            .decode(signature_b64.trim())
            .map_err(|e| Refusal::BadSignature(format!("signature is not base64: {e}")))?;
        if !self.verifies(payload, &sig) {
            return Err(Refusal::BadSignature(format!(
                "no signature verifies with key {}",
                self.id()
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|e| Refusal::BadSignature(format!("payload is not JSON: {e}")))?;
        let named = v["critical"]["image"]["docker-manifest-digest"].as_str();
        if v["critical"]["type"].as_str() != Some(PAYLOAD_TYPE) {
            return Err(Refusal::BadSignature("payload type is not cosign's".into()));
        }
        if named != Some(digest) {
            return Err(Refusal::WrongDigest(format!(
                "signed payload names {}, the bundle is {digest}",
                named.unwrap_or("nothing")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        SigningKey::from_pem(&format!(
            "-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"
        ))
        .unwrap()
    }

    #[test]
    fn signatures_verify_for_their_digest_and_key_only() {
        let k = key();
        let public = VerifyKey::from_pem(&k.public().to_pem()).unwrap();
        assert_eq!(public, k.public());
        let d1 = format!("sha256:{}", "1".repeat(64));
        let d2 = format!("sha256:{}", "2".repeat(64));
        let p = payload("127.0.0.1:5000/edge", &d1);
        let sig = base64::engine::general_purpose::STANDARD.encode(k.sign(&p).unwrap());
        public.check(&p, &sig, &d1).unwrap();
        assert!(matches!(
            public.check(&p, &sig, &d2),
            Err(Refusal::WrongDigest(_))
        ));
        let other = key().public();
        assert!(matches!(
            other.check(&p, &sig, &d1),
            Err(Refusal::BadSignature(_))
        ));
        let mut tampered = p.clone();
        tampered[5] ^= 1;
        assert!(public.check(&tampered, &sig, &d1).is_err());
        assert_eq!(signature_tag(&d1), format!("sha256-{}.sig", "1".repeat(64)));
    }
}
