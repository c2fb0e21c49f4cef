//! TLS termination with rustls: the policy's certificates, loaded and checked when a
//! snapshot is built, and chosen by SNI on every handshake from the snapshot being
//! served, so certificates swap with the policy while listeners stay bound.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::policy::{CertDef, Diagnostic, TlsDef};
use crate::snapshot::Live;

/// The certificates of one snapshot, indexed by the names they serve.
#[derive(Debug)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*`, e.g. `.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    /// Each certificate file with the SHA-256 of its leaf (DER, hex), in policy order:
    /// what `sluice ctl diff` compares.
    pub fingerprints: Vec<(std::path::PathBuf, String)>,
}

/// The SHA-256 (hex) of the leaf certificate (the first PEM block) of `cert`.
pub fn fingerprint(cert: &Path) -> Result<String, String> {
    let pem = std::fs::read(cert).map_err(|e| format!("certificate {}: {e}", cert.display()))?;
    let leaf = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .ok_or_else(|| format!("certificate {}: no CERTIFICATE block", cert.display()))?
        .map_err(|e| format!("certificate {}: bad PEM: {e}", cert.display()))?;
    use sha2::Digest;
    Ok(hex::encode(sha2::Sha256::digest(leaf.as_ref())))
}

impl CertStore {
    /// Loads every certificate of `def`; each problem is a diagnostic naming the file.
    pub fn load(policy: &Path, def: &TlsDef) -> Result<CertStore, Vec<Diagnostic>> {
        let mut errors = Vec::new();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        let mut fingerprints = Vec::new();
        for c in &def.certificates {
            match load_one(c) {
                Ok((key, names)) => {
                    use sha2::Digest;
                    fingerprints.push((
                        c.cert.clone(),
                        hex::encode(sha2::Sha256::digest(key.cert[0].as_ref())),
                    ));
                    let key = Arc::new(key);
                    for n in names {
                        let slot = match n.strip_prefix('*') {
                            Some(suffix) => wildcard.entry(suffix.to_string()),
                            None => exact.entry(n),
                        };
                        slot.or_insert_with(|| key.clone());
                    }
                    default.get_or_insert(key);
                }
                Err(message) => errors.push(Diagnostic {
                    file: policy.to_path_buf(),
                    line: Some(c.line),
                    message,
                }),
            }
        }
        match default {
            Some(default) if errors.is_empty() => Ok(CertStore {
                exact,
                wildcard,
                default,
                fingerprints,
            }),
            _ => Err(errors),
        }
    }

    /// The certificate for a client hello's server name: an exact name, then the
    /// closest wildcard, then the first certificate of the policy.
    pub fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(name) = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase()) {
            if let Some(k) = self.exact.get(&name) {
                return k.clone();
            }
            if let Some(dot) = name.find('.') {
                if let Some(k) = self.wildcard.get(&name[dot..]) {
                    return k.clone();
                }
            }
        }
        self.default.clone()
    }
}

fn load_one(c: &CertDef) -> Result<(CertifiedKey, Vec<String>), String> {
    let cert_name = c.cert.display();
    let key_name = c.key.display();
    let pem = std::fs::read(&c.cert).map_err(|e| format!("certificate {cert_name}: {e}"))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate {cert_name}: bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("certificate {cert_name}: no CERTIFICATE block"));
    }
    let pem = std::fs::read(&c.key).map_err(|e| format!("key {key_name}: {e}"))?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("key {key_name}: bad PEM: {e}"))?
        .ok_or_else(|| format!("key {key_name}: no PRIVATE KEY block"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("key {key_name}: unsupported key: {e}"))?;
    let certified = CertifiedKey::new(certs.clone(), signer);
    certified
        .keys_match()
        .map_err(|_| format!("key {key_name} does not belong to certificate {cert_name}"))?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0])
        .map_err(|e| format!("certificate {cert_name}: cannot parse: {e}"))?;
    if !leaf.validity().is_valid() {
        return Err(format!(
            "certificate {cert_name} is not valid now (valid {} to {})",
            leaf.validity().not_before,
            leaf.validity().not_after
        ));
    }
    let mut names = c.names.clone();
    if names.is_empty() {
        if let Ok(Some(san)) = leaf.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    names.push(d.to_ascii_lowercase());
                }
            }
        }
        if names.is_empty() {
            names.extend(
                leaf.subject()
                    .iter_common_name()
                    .filter_map(|cn| cn.as_str().ok())
                    .map(|cn| cn.to_ascii_lowercase()),
            );
        }
    }
    Ok((certified, names))
}

/// Picks the certificate on every handshake from the snapshot being served.
struct SniResolver {
    live: Arc<Live>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snap = self.live.load();
        Some(snap.certs.as_ref()?.pick(hello.server_name()))
    }
}

/// Pingora listener settings: TLS 1.2 and 1.3 (rustls has nothing older), ALPN h2 and
/// http/1.1 when `def.h2`, certificates from the live snapshot.
/// The connection's SNI is kept in its TLS digest ([`ServerName`]).
pub fn settings(def: &TlsDef, live: Arc<Live>) -> anyhow::Result<TlsSettings> {
    let mut tls = TlsSettings::with_callbacks(Box::new(KeepServerName))?;
    tls.set_cert_resolver(Arc::new(SniResolver { live }));
    if def.h2 {
        tls.enable_h2();
    }
    Ok(tls)
}

/// The TLS server name (SNI) a client sent, kept in its connection's TLS digest
/// (`SslDigest::extension`): read it with [`server_name`].
#[derive(Debug)]
pub struct ServerName(pub String);

/// Keeps the SNI of each handshake ([`ServerName`]).
struct KeepServerName;

#[async_trait::async_trait]
impl pingora::listeners::TlsAccept for KeepServerName {
    async fn handshake_complete_callback(
        &self,
        tls: &pingora::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let name = tls.server_name()?;
        Some(Arc::new(ServerName(name.to_string())))
    }
}

/// The SNI of the TLS connection `digest` describes: none in cleartext or without SNI.
pub fn server_name(tls: Option<&pingora::protocols::tls::SslDigest>) -> Option<&str> {
    let tls = tls?;
    tls.extension.get::<ServerName>().map(|n| n.0.as_str())
}
