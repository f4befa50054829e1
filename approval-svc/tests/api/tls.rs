//! approval-svc → order-svc over mutual TLS (approval-svc's `--order-svc-ca/-cert/-key`), with
//! approval-svc's own server on TLS too; and precise start-up errors for its client settings.

use std::path::PathBuf;

use lab_common::tls::DevCerts;
use lab_proto::approval::v1 as apb;
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1 as opb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use uuid::Uuid;

use crate::helpers::*;

/// `lab certs init`'s files in a temporary directory.
struct Files {
    dir: tempfile::TempDir,
    certs: DevCerts,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs = DevCerts::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        certs.write(dir.path()).unwrap();
        Self { dir, certs }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A channel to `addr` over TLS, presenting the client certificate.
    async fn channel(&self, addr: std::net::SocketAddr) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.certs.ca_pem()))
            .identity(Identity::from_pem(
                &self.certs.client.cert,
                &self.certs.client.key,
            ))
            .domain_name("localhost");
        Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .expect("mTLS connect")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_reaches_order_svc_over_mutual_tls() {
    bounded(async {
        let files = Files::new();
        let mut order_config = order_config(fresh_database().await);
        order_config.tls.cert = Some(files.path("server.pem"));
        order_config.tls.key = Some(files.path("server-key.pem"));
        order_config.tls.client_ca = Some(files.path("ca.pem"));
        let order = OrderSvc::start_with(order_config).await;

        let mut config =
            ApprovalSvc::config(&fresh_database().await, &format!("https://{}", order.addr));
        config.order_svc_ca = Some(files.path("ca.pem"));
        config.order_svc_cert = Some(files.path("client.pem"));
        config.order_svc_key = Some(files.path("client-key.pem"));
        config.tls.cert = Some(files.path("server.pem"));
        config.tls.key = Some(files.path("server-key.pem"));
        let approval = ApprovalSvc::start(config).await;

        let mut shop = OrderServiceClient::new(files.channel(order.addr).await);
        let product = shop
            .create_product(opb::CreateProductRequest {
                name: "reward".into(),
                initial_stock: 3,
                max_per_customer: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap();
        let mut client = ApprovalServiceClient::new(files.channel(approval.addr).await);
        let challenge = client
            .submit_challenge(apb::SubmitChallengeRequest {
                user_id: Uuid::now_v7().to_string(),
                product_id: product.product_id.clone(),
                quantity: 2,
                title: "ran a marathon".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap();
        client
            .approve_challenge(apb::ApproveChallengeRequest {
                challenge_id: challenge.challenge_id.clone(),
                approver: "admin".into(),
            })
            .await
            .expect("ApproveChallenge over TLS");

        let get = |client: &ApprovalServiceClient<Channel>| {
            let mut client = client.clone();
            let challenge_id = challenge.challenge_id.clone();
            async move {
                client
                    .get_challenge(apb::GetChallengeRequest { challenge_id })
                    .await
                    .unwrap()
                    .into_inner()
                    .challenge
                    .unwrap()
            }
        };
        eventually(SETTLE, "the challenge to be approved", || async {
            status(&get(&client).await) == apb::ChallengeStatus::Approved
        })
        .await;
        let approved = get(&client).await;
        let orders = shop
            .list_orders(opb::ListOrdersRequest {
                product_id: product.product_id.clone(),
                page_size: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .orders;
        assert_eq!(orders.len(), 1, "one order, created over mutual TLS");
        assert_eq!(orders[0].idempotency_key, approved.idempotency_key);
    })
    .await;
}

#[tokio::test]
async fn wrong_order_svc_tls_settings_fail_the_build_with_a_precise_message() {
    let files = Files::new();
    let file = |name: &str| Some(files.path(name));
    let missing = files.path("missing.pem");
    let cases: Vec<(&str, [Option<PathBuf>; 3], String)> = vec![
        (
            "https://127.0.0.1:1",
            [None, None, None],
            "an https:// URL needs --order-svc-ca".into(),
        ),
        (
            "http://127.0.0.1:1",
            [file("ca.pem"), None, None],
            "with --order-svc-ca every order-svc URL must be https://".into(),
        ),
        (
            "https://127.0.0.1:1",
            [file("ca.pem"), file("client.pem"), None],
            "--order-svc-cert needs --order-svc-key".into(),
        ),
        (
            "https://127.0.0.1:1",
            [None, file("client.pem"), file("client-key.pem")],
            "--order-svc-cert needs --order-svc-ca".into(),
        ),
        (
            "https://127.0.0.1:1",
            [Some(missing.clone()), None, None],
            format!("cannot read the CA (--order-svc-ca) {missing:?}"),
        ),
        (
            "https://127.0.0.1:1",
            [file("ca.pem"), file("client.pem"), file("server-key.pem")],
            "--order-svc-cert and --order-svc-key".into(),
        ),
    ];
    for (url, [ca, cert, key], expected) in cases {
        // The database is never reached when the TLS settings are checked first.
        let mut config = ApprovalSvc::config("postgres://nobody@127.0.0.1:1/unreachable", url);
        config.order_svc_ca = ca;
        config.order_svc_cert = cert;
        config.order_svc_key = key;
        let error = match approval_svc::Application::build(config).await {
            Ok(_) => panic!("built with wrong TLS settings; expected {expected:?}"),
            Err(error) => error.to_string(),
        };
        assert!(error.starts_with("TLS set-up failed: "), "{error}");
        assert!(error.contains(&expected), "{error:?} lacks {expected:?}");
    }
}
