//! TLS for every listener (rustls with ring): the gRPC server through tonic's
//! TLS configuration, the HTTP and metrics listeners through a TLS listener
//! for axum. With a client CA, clients must present a certificate it signed
//! (mutual TLS); any other certificate, or none, ends the handshake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish the TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes in progress at once per HTTP listener; more connections
/// wait in the kernel's accept queue.
pub(crate) const HANDSHAKES_MAX: usize = 256;

/// The PEM files of the server's TLS identity and, for mutual TLS, the CA
/// that signs client certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that sign client certificates; `None` = no
    /// client certificates asked for.
    pub client_ca: Option<PathBuf>,
}

/// The loaded TLS settings of the listeners.
#[derive(Clone)]
pub(crate) struct Tls {
    /// For the gRPC server.
    pub(crate) grpc: tonic::transport::ServerTlsConfig,
    /// For the HTTP and metrics listeners.
    pub(crate) http: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{what}: cannot read {}", path.display()))
}

fn certificates(
    pem: &[u8],
    path: &Path,
    what: &str,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{what}: {} is not PEM certificates", path.display()))?;
    if certificates.is_empty() {
        anyhow::bail!("{what}: {} holds no certificate", path.display());
    }
    Ok(certificates)
}

/// Reads and checks the files; every error names the key and the file.
pub(crate) fn load(files: &TlsFiles) -> anyhow::Result<Tls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert_pem = read(&files.cert, "tls_cert")?;
    let key_pem = read(&files.key, "tls_key")?;
    let chain = certificates(&cert_pem, &files.cert, "tls_cert")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("tls_key: {} is not a PEM private key", files.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let mut grpc = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(&cert_pem, &key_pem));
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let ca_pem = read(path, "tls_client_ca")?;
            let mut roots = rustls::RootCertStore::empty();
            for certificate in certificates(&ca_pem, path, "tls_client_ca")? {
                roots.add(certificate).with_context(|| {
                    format!(
                        "tls_client_ca: {} holds an unusable CA certificate",
                        path.display()
                    )
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            )
            .build()
            .context("tls_client_ca: client certificate verifier")?;
            grpc = grpc.client_ca_root(tonic::transport::Certificate::from_pem(&ca_pem));
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut http = builder
        .with_single_cert(chain, key)
        .context("tls_cert and tls_key: the key does not match the certificate")?;
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        grpc: grpc.timeout(HANDSHAKE_TIMEOUT),
        http: Arc::new(http),
    })
}

/// An HTTP listener that hands axum only connections whose TLS handshake
/// succeeded. Handshakes run in their own tasks (at most
/// [`HANDSHAKES_MAX`] at once, each within [`HANDSHAKE_TIMEOUT`]), so a
/// slow or hostile client cannot hold up the others.
pub(crate) struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, accepted) = mpsc::channel(64);
        let tls = TlsAcceptor::from(config);
        let permits = Arc::new(Semaphore::new(HANDSHAKES_MAX));
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let tls = tls.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake refused");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            accepted,
            local,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The acceptor task ended (it does not, but for shutdown): never
            // yield again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
