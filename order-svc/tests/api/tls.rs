//! TLS and mutual TLS on order-svc's gRPC server: real RPCs over TLS, clients refused at the
//! handshake, a renewed certificate served without a restart, and precise start-up errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lab_common::tls::{DevCerts, PemPair};
use lab_proto::order::v1 as pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use order_svc::Application;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::{WAIT, config, shared};

fn hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

/// `lab certs init`'s files in a temporary directory.
struct Files {
    dir: tempfile::TempDir,
    certs: DevCerts,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs = DevCerts::generate(&hosts()).unwrap();
        certs.write(dir.path()).unwrap();
        Self { dir, certs }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

struct Server {
    addr: SocketAddr,
    pool: PgPool,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Server {
    async fn start(files: &Files, mutual: bool) -> Self {
        let url = lab_common::postgres::scratch_database().await.unwrap();
        let mut config = config(url);
        config.tls.cert = Some(files.path("server.pem"));
        config.tls.key = Some(files.path("server-key.pem"));
        config.tls.client_ca = mutual.then(|| files.path("ca.pem"));
        let application = Application::build(config).await.expect("order-svc builds");
        let addr = application.local_addr();
        let pool = application.pool().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(application.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            pool,
            stop: Some(stop),
        }
    }

    async fn products(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM products")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

/// A client over TLS trusting `ca`, presenting `identity` when given.
async fn tls_client(
    addr: SocketAddr,
    ca: &str,
    identity: Option<&PemPair>,
) -> Result<OrderServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(&identity.cert, &identity.key));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(OrderServiceClient::new(channel))
}

fn create(name: &str) -> pb::CreateProductRequest {
    pb::CreateProductRequest {
        name: name.into(),
        initial_stock: 5,
        max_per_customer: 0,
    }
}

/// Creates a product through `client` and reads it back: a real RPC both ways.
async fn round_trip(client: &mut OrderServiceClient<Channel>) {
    let product = client
        .create_product(create("over TLS"))
        .await
        .expect("CreateProduct over TLS")
        .into_inner()
        .product
        .unwrap();
    let read = client
        .get_product(pb::GetProductRequest {
            product_id: product.product_id.clone(),
        })
        .await
        .expect("GetProduct over TLS")
        .into_inner()
        .product
        .unwrap();
    assert_eq!(read.stock, 5);
}

/// What a client that the server refuses gets: the connection's error, or the call's.
async fn refused(addr: SocketAddr, ca: &str, identity: Option<&PemPair>) -> String {
    match tls_client(addr, ca, identity).await {
        Err(error) => format!("{error:?}"),
        Ok(mut client) => {
            let status = client
                .create_product(create("must not be written"))
                .await
                .expect_err("a refused client's call fails");
            format!("{status:?}")
        }
    }
}

/// A bare rustls connection (no HTTP/2) trusting `ca`, presenting `identity` when given.
async fn bare_tls(
    addr: SocketAddr,
    ca: &str,
    identity: Option<&PemPair>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => builder
            .with_client_auth_cert(
                vec![der(&identity.cert)],
                PrivateKeyDer::from_pem_slice(identity.key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the client's side of the handshake")
}

/// The alert a client gets once its handshake reaches the server (TLS 1.3 verifies the
/// client's certificate after the client has finished); `None` when the server accepted it
/// (and sent its HTTP/2 settings, or waits for the client's preface).
async fn handshake_alert(addr: SocketAddr, ca: &str, identity: Option<&PemPair>) -> Option<String> {
    let mut tls = bare_tls(addr, ca, identity).await;
    let mut buffer = [0_u8; 64];
    match tokio::time::timeout(
        Duration::from_millis(500),
        tokio::io::AsyncReadExt::read(&mut tls, &mut buffer),
    )
    .await
    {
        Ok(Err(error)) => Some(format!("{error:?}")),
        Ok(Ok(_)) | Err(_) => None,
    }
}

/// The certificate the server presents to a new connection.
async fn served_certificate(addr: SocketAddr, ca: &str) -> CertificateDer<'static> {
    let tls = bare_tls(addr, ca, None).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn names(certificate: &CertificateDer<'_>, common_name: &str) -> bool {
    certificate
        .windows(common_name.len())
        .any(|window| window == common_name.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_serves_real_calls_and_refuses_plaintext() {
    let _machine = shared().await;
    let files = Files::new();
    let server = Server::start(&files, false).await;
    let ca = files.certs.ca_pem();

    let mut client = tls_client(server.addr, &ca, None)
        .await
        .expect("TLS connect");
    round_trip(&mut client).await;

    // A plaintext HTTP/2 client gets no service from a TLS port.
    let plain = match Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
    {
        Err(_) => true,
        Ok(channel) => OrderServiceClient::new(channel)
            .create_product(create("plaintext"))
            .await
            .is_err(),
    };
    assert!(plain, "a plaintext call was answered");
    // A client that does not trust the server's CA refuses the server.
    let stranger = DevCerts::generate(&hosts()).unwrap();
    let error = refused(server.addr, &stranger.ca_pem(), None).await;
    assert!(error.contains("InvalidCertificate"), "{error}");
    assert_eq!(server.products().await, 1, "only the TLS client's product");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_its_ca() {
    let _machine = shared().await;
    let files = Files::new();
    let server = Server::start(&files, true).await;
    let ca = files.certs.ca_pem();

    let mut client = tls_client(server.addr, &ca, Some(&files.certs.client))
        .await
        .expect("mTLS connect");
    round_trip(&mut client).await;
    assert_eq!(server.products().await, 1);

    // No certificate, or one from another CA (even one with the same name): the call fails
    // and nothing is written...
    let stranger = DevCerts::generate(&hosts()).unwrap();
    refused(server.addr, &ca, None).await;
    refused(server.addr, &ca, Some(&stranger.client)).await;
    assert_eq!(server.products().await, 1, "refused clients wrote nothing");
    // ...because the handshake ended in the server's alert, before any HTTP/2.
    let alert = handshake_alert(server.addr, &ca, None)
        .await
        .unwrap_or_default();
    assert!(alert.contains("CertificateRequired"), "{alert}");
    let alert = handshake_alert(server.addr, &ca, Some(&stranger.client))
        .await
        .unwrap_or_default();
    assert!(alert.contains("AlertReceived"), "{alert}");
    let alert = handshake_alert(server.addr, &ca, Some(&files.certs.client)).await;
    assert_eq!(alert, None, "the CA's own client certificate is accepted");

    // The admitted connection is unaffected by the refusals.
    round_trip(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let _machine = shared().await;
    let files = Files::new();
    let server = Server::start(&files, false).await;
    let ca = files.certs.ca_pem();
    let first = der(&files.certs.server.cert);
    assert_eq!(served_certificate(server.addr, &ca).await, first);
    let mut before = tls_client(server.addr, &ca, None).await.unwrap();
    round_trip(&mut before).await;

    // A broken file (say, caught mid-copy) is refused: the last good certificate stays.
    std::fs::write(files.path("server.pem"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(served_certificate(server.addr, &ca).await, first);

    let renewed = files
        .certs
        .issue_server("renewed server", &hosts())
        .unwrap();
    renewed.write(files.dir.path(), "server").unwrap();
    let expected = der(&renewed.cert);
    assert_ne!(expected, first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let served = served_certificate(server.addr, &ca).await;
        if served == expected {
            assert!(names(&served, "renewed server"), "the new subject");
            break;
        }
        assert_eq!(served, first, "only the old or the new certificate");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // New connections work with the new certificate; the old connection still works.
    round_trip(&mut tls_client(server.addr, &ca, None).await.unwrap()).await;
    round_trip(&mut before).await;
}

#[tokio::test]
async fn wrong_tls_settings_fail_the_build_with_a_precise_message() {
    let files = Files::new();
    let garbage = files.path("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").unwrap();
    let missing = files.path("missing.pem");
    let file = |name: &str| Some(files.path(name));
    // --tls-cert, --tls-key, --tls-client-ca, and what the message says.
    type Case = (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>, String);
    let cases: Vec<Case> = vec![
        (
            file("server.pem"),
            None,
            None,
            "--tls-cert needs --tls-key".into(),
        ),
        (
            None,
            file("server-key.pem"),
            None,
            "--tls-key needs --tls-cert".into(),
        ),
        (
            None,
            None,
            file("ca.pem"),
            "--tls-client-ca needs --tls-cert and --tls-key".into(),
        ),
        (
            Some(missing.clone()),
            file("server-key.pem"),
            None,
            format!("cannot read the certificate (--tls-cert) {missing:?}"),
        ),
        (
            Some(garbage.clone()),
            file("server-key.pem"),
            None,
            format!(
                "the certificate (--tls-cert) {garbage:?} is not usable: no PEM CERTIFICATE block"
            ),
        ),
        (
            file("server.pem"),
            file("server.pem"),
            None,
            "is not usable: no PEM PRIVATE KEY block".into(),
        ),
        (
            file("server.pem"),
            file("client-key.pem"),
            None,
            "--tls-key".into(),
        ),
        (
            file("server.pem"),
            file("server-key.pem"),
            Some(garbage.clone()),
            format!("the client CA (--tls-client-ca) {garbage:?} is not usable"),
        ),
    ];
    for (cert, key, client_ca, expected) in cases {
        // Never reached when the TLS settings are checked first, as they must be.
        let mut config = config("postgres://nobody@127.0.0.1:1/unreachable");
        config.tls.cert = cert;
        config.tls.key = key;
        config.tls.client_ca = client_ca;
        let error = match Application::build(config).await {
            Ok(_) => panic!("built with wrong TLS settings; expected {expected:?}"),
            Err(error) => error.to_string(),
        };
        assert!(error.starts_with("TLS set-up failed: "), "{error}");
        assert!(error.contains(&expected), "{error:?} lacks {expected:?}");
    }
}
