//! Connections from a component chain to a pool's peers: TCP, then TLS when the pool
//! has `tls` (rustls, verified against the pool's `ca_file` or the system roots, under
//! its `sni`), then HTTP/1.1 or HTTP/2 (`h2`: ALPN over TLS, prior knowledge in
//! cleartext) with hyper; the pool's `connect_timeout_ms` bounds connecting and its
//! `read_timeout_ms` the wait for a response head. Idle connections are kept per peer
//! and connection kind.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hyper::body::Incoming;
use rustls::pki_types::{CertificateDer, ServerName};
use wasmtime_wasi_http::io::TokioIo;

use crate::host::component::{ErrorCode, WasiBody};
use crate::policy::UpstreamTls;
use crate::upstream::UpstreamPool;

/// How one pool's peers are reached, built once per policy and pool.
pub struct Dialer {
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    h2: bool,
    connect_timeout: Duration,
    read_timeout: Duration,
    /// What makes two pools' connections to one address interchangeable.
    kind: u64,
}

impl Dialer {
    /// The dialer of `pool`; an error when its TLS settings cannot be used.
    pub fn new(pool: &UpstreamPool) -> Result<Dialer, String> {
        let def = &pool.def;
        let tls = match &def.tls {
            Some(t) => Some(tls_connector(t, pool, def.h2)?),
            None => None,
        };
        let mut h = DefaultHasher::new();
        (&def.tls, def.h2).hash(&mut h);
        // A changed CA file is another kind: no connection verified under the old one.
        for der in pool.ca_certificates().into_iter().flatten() {
            der.hash(&mut h);
        }
        Ok(Dialer {
            tls,
            h2: def.h2,
            connect_timeout: Duration::from_millis(def.connect_timeout_ms),
            read_timeout: Duration::from_millis(def.read_timeout_ms),
            kind: h.finish(),
        })
    }

    /// Whether requests to this pool go out as HTTP/2.
    pub fn h2(&self) -> bool {
        self.h2
    }

    /// Whether the pool's peers speak TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A connection to `addr`: an idle one, else a new one.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Sender, ErrorCode> {
        if let Some(s) = idle::take((addr, self.kind)) {
            return Ok(s);
        }
        match tokio::time::timeout(self.connect_timeout, self.open(addr)).await {
            Ok(r) => r,
            Err(_) => Err(ErrorCode::ConnectionTimeout),
        }
    }

    /// Sends `req` on `sender`; the response head must come within the read timeout.
    pub async fn send(
        &self,
        sender: &mut Sender,
        req: http::Request<WasiBody>,
    ) -> Result<http::Response<Incoming>, ErrorCode> {
        let sent = match sender {
            Sender::H1(s) => tokio::time::timeout(self.read_timeout, s.send_request(req)).await,
            Sender::H2(s) => tokio::time::timeout(self.read_timeout, s.send_request(req)).await,
        };
        match sent {
            Ok(Ok(res)) => Ok(res),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "component upstream request failed");
                Err(ErrorCode::HttpProtocolError)
            }
            Err(_) => Err(ErrorCode::ConnectionReadTimeout),
        }
    }

    /// Keeps `sender` for the next request to `addr` once it can carry one (an HTTP/1
    /// connection after this response's body is read; HTTP/2 at once).
    pub fn release(&self, addr: SocketAddr, sender: Sender) {
        let key = (addr, self.kind);
        tokio::spawn(async move {
            let ready = match sender {
                Sender::H1(mut s) => s.ready().await.is_ok().then_some(Sender::H1(s)),
                Sender::H2(mut s) => s.ready().await.is_ok().then_some(Sender::H2(s)),
            };
            if let Some(s) = ready {
                idle::put(key, s);
            }
        });
    }

    async fn open(&self, addr: SocketAddr) -> Result<Sender, ErrorCode> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|_| ErrorCode::ConnectionRefused)?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp, self.h2).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| {
                        tracing::debug!(error = %e, peer = %addr, "component upstream TLS handshake failed");
                        if e.get_ref().is_some_and(|r| r.is::<rustls::Error>()) {
                            ErrorCode::TlsCertificateError
                        } else {
                            ErrorCode::TlsProtocolError
                        }
                    })?;
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                handshake(tls, h2).await
            }
        }
    }
}

/// A connection's request half.
pub enum Sender {
    /// HTTP/1.1: one request at a time.
    H1(hyper::client::conn::http1::SendRequest<WasiBody>),
    /// HTTP/2: streams multiplexed; clones share the connection.
    H2(hyper::client::conn::http2::SendRequest<WasiBody>),
}

impl Sender {
    fn usable(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_ready() && !s.is_closed(),
            Sender::H2(s) => s.is_ready() && !s.is_closed(),
        }
    }
}

/// HTTP/1.1 or HTTP/2 over `io`, the connection driven by a task of its own.
async fn handshake<T>(io: T, h2: bool) -> Result<Sender, ErrorCode>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if h2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(Spawn, io)
            .await
            .map_err(|_| ErrorCode::ConnectionRefused)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "component upstream connection ended");
            }
        });
        return Ok(Sender::H2(sender));
    }
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|_| ErrorCode::ConnectionRefused)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "component upstream connection ended");
        }
    });
    Ok(Sender::H1(sender))
}

/// hyper's HTTP/2 tasks, on the current Tokio runtime.
#[derive(Clone, Copy)]
struct Spawn;

impl<F> hyper::rt::Executor<F> for Spawn
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

/// The TLS client of a pool: its roots (the certificates of its CA file, loaded with the
/// pool, else the system's), ALPN, and the name sent in SNI and verified;
/// `verify = false` accepts any certificate.
fn tls_connector(
    t: &UpstreamTls,
    pool: &UpstreamPool,
    h2: bool,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if t.verify {
        let mut roots = rustls::RootCertStore::empty();
        match pool.ca_certificates() {
            Some(certs) => {
                for der in certs {
                    roots
                        .add(CertificateDer::from(der.to_vec()))
                        .map_err(|e| format!("ca_file: {e}"))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    };
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let name = ServerName::try_from(t.sni.clone()).map_err(|e| format!("sni {:?}: {e}", t.sni))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

/// `verify = false`: any certificate is taken; the handshake's signatures are still
/// checked (the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Idle connections per peer address and connection kind (at most [`MAX`] each),
/// process-wide.
mod idle {
    use super::*;

    /// Idle connections kept per peer and kind.
    pub(super) const MAX: usize = 64;

    type Key = (SocketAddr, u64);

    fn map() -> &'static Mutex<HashMap<Key, Vec<Sender>>> {
        static IDLE: OnceLock<Mutex<HashMap<Key, Vec<Sender>>>> = OnceLock::new();
        IDLE.get_or_init(Default::default)
    }

    /// An idle connection that is still open and ready; an HTTP/2 one stays idle for
    /// other requests (a clone is handed out).
    pub(super) fn take(key: Key) -> Option<Sender> {
        let mut map = map().lock().unwrap_or_else(|e| e.into_inner());
        let list = map.get_mut(&key)?;
        while let Some(s) = list.pop() {
            if !s.usable() {
                continue;
            }
            if let Sender::H2(h2) = &s {
                let shared = Sender::H2(h2.clone());
                list.push(s);
                return Some(shared);
            }
            return Some(s);
        }
        None
    }

    /// Keeps a ready connection (one HTTP/2 connection per key is enough).
    pub(super) fn put(key: Key, sender: Sender) {
        let mut map = map().lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(key).or_default();
        let h2_kept = matches!(sender, Sender::H2(_)) && list.iter().any(Sender::usable);
        if list.len() < MAX && !h2_kept {
            list.push(sender);
        }
    }
}
