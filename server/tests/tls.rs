//! TLS and mutual TLS on every listener, end to end: certificates made here
//! with rcgen; the gRPC API through the real client and `serialctl`, the HTTP
//! probes through a rustls client; plain text refused on a TLS listener, a
//! client certificate from an unknown CA refused; a non-loopback listen
//! address without TLS refused unless `--insecure`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::Server;
use proto::serial::v1 as pb;
use proto::serial::v1::server_info_service_client::ServerInfoServiceClient;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_rustls::rustls;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A CA with a server certificate for 127.0.0.1 and localhost and one client
/// certificate, written as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn text(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(dir: &Path, name: &str, names: &[&str], issuer: &CertifiedIssuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let certificate = params.signed_by(&key, issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), certificate.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let authority = ca("serialsvc test CA");
    std::fs::write(dir.path().join("ca.pem"), authority.pem()).unwrap();
    leaf(
        dir.path(),
        "server",
        &["localhost", "127.0.0.1"],
        &authority,
    );
    leaf(dir.path(), "line-7", &["line-7.example"], &authority);
    let stranger = ca("someone else's CA");
    leaf(dir.path(), "intruder", &["intruder.example"], &stranger);
    Pki { dir }
}

async fn info(
    server: &Server,
    pki: &Pki,
    client: Option<&str>,
) -> Result<pb::GetServerInfoResponse, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.text("ca.pem")))
        .domain_name("localhost");
    if let Some(name) = client {
        tls = tls.identity(Identity::from_pem(
            pki.text(&format!("{name}.pem")),
            pki.text(&format!("{name}.key")),
        ));
    }
    let channel = Endpoint::from_shared(format!("https://{}", server.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let bearer = format!("Bearer {}", server.admin_token()).parse().unwrap();
    ServerInfoServiceClient::new(tonic::service::interceptor::InterceptedService::new(
        channel,
        common::api::Bearer(Some(bearer)),
    ))
    .get_server_info(pb::GetServerInfoRequest {})
    .await
    .map(|r| r.into_inner())
    .map_err(|e| format!("call: {e:?}"))
}

/// GET over TLS with rustls: Ok(status line) or the handshake's error.
fn https_get(
    address: SocketAddr,
    pki: &Pki,
    client: Option<&str>,
    path: &str,
) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for certificate in rustls::pki_types::CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap()
    {
        roots.add(certificate.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(name) => builder
            .with_client_auth_cert(
                rustls::pki_types::CertificateDer::pem_file_iter(pki.path(&format!("{name}.pem")))
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect(),
                rustls::pki_types::PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key")))
                    .unwrap(),
            )
            .unwrap(),
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut stream = rustls::Stream::new(&mut connection, &mut socket);
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    if response.is_empty() {
        return Err("connection closed without an answer".into());
    }
    Ok(response.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn tls_serves_grpc_and_http_and_refuses_plain_text() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            "--tls-cert",
            &pki.arg("server.pem"),
            "--tls-key",
            &pki.arg("server.key"),
        ],
    );
    let answer = info(&server, &pki, None).await.unwrap();
    assert_eq!(answer.api, "serial.v1");
    // Plain text on the TLS port gets no answer.
    let plain = Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await;
    let refused = match plain {
        Err(_) => true,
        Ok(channel) => ServerInfoServiceClient::new(channel)
            .get_server_info(pb::GetServerInfoRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a plain-text call was answered on the TLS port");
    // HTTPS probes and metrics.
    let (http, metrics) = (server.http, server.metrics);
    let line = https_get(http, &pki, None, "/healthz").unwrap();
    assert!(line.contains("200"), "{line}");
    let line = https_get(metrics, &pki, None, "/metrics").unwrap();
    assert!(line.contains("200"), "{line}");
    // serialctl over TLS.
    let output = common::serialctl(&[
        "--endpoint",
        &format!("https://localhost:{}", server.grpc.port()),
        "--tls-ca",
        &pki.arg("ca.pem"),
        "health",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
}

#[tokio::test]
async fn mutual_tls_admits_only_certificates_of_the_client_ca() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            "--tls-cert",
            &pki.arg("server.pem"),
            "--tls-key",
            &pki.arg("server.key"),
            "--tls-client-ca",
            &pki.arg("ca.pem"),
        ],
    );
    info(&server, &pki, Some("line-7")).await.unwrap();
    let error = info(&server, &pki, Some("intruder")).await.unwrap_err();
    assert!(!error.is_empty());
    info(&server, &pki, None)
        .await
        .expect_err("no client certificate must be refused");
    let http = server.http;
    assert!(
        https_get(http, &pki, Some("line-7"), "/healthz")
            .unwrap()
            .contains("200")
    );
    assert!(https_get(http, &pki, Some("intruder"), "/healthz").is_err());
    assert!(https_get(http, &pki, None, "/healthz").is_err());
    tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
}

#[test]
fn plain_text_off_loopback_is_refused_unless_insecure() {
    let check = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_serialsvc"))
            .args(["check-config", "--grpc-listen", "0.0.0.0:50051"])
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = check(&[]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("grpc_listen"), "{message}");
    assert!(message.contains("not a loopback address"), "{message}");
    assert!(message.contains("insecure"), "{message}");
    assert!(check(&["--insecure"]).status.success());
    let pki = pki();
    assert!(
        check(&[
            "--tls-cert",
            &pki.arg("server.pem"),
            "--tls-key",
            &pki.arg("server.key")
        ])
        .status
        .success()
    );
    let half = check(&["--tls-cert", &pki.arg("server.pem")]);
    assert!(String::from_utf8_lossy(&half.stderr).contains("tls_key"));
}
