//! `lab check --token` against both services with authentication on (as `lab up` runs them):
//! the real `lab` binary passes with a token holding `approver` and `shop-admin`, given by flag
//! or by `LAB_TOKEN`, and cannot run (exit 2, UNAUTHENTICATED) without one. The services run in
//! this process on PostgreSQL (`DATABASE_URL`, or a throwaway server).

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use clap::Parser;
use lab_common::auth::issue::{TempKey, TokenSpec};
use lab_common::postgres::{ThrowawayPostgres, create_database};
use lab_common::shutdown::Shutdown;
use lab_proto::approval::v1 as approval_pb;
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1 as order_pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tokio::process::Command;
use uuid::Uuid;

fn token(key: &TempKey, subject: &str, roles: &[&str]) -> String {
    key.signer()
        .token(&TokenSpec {
            subject: subject.into(),
            roles: roles.iter().map(|role| (*role).to_owned()).collect(),
            ttl: Duration::from_secs(600),
            ..TokenSpec::default()
        })
        .unwrap()
}

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Both services secured by `key` on fresh databases; an approved challenge, so the check
/// has orders, challenges and a ledger to read.
async fn secured(key: &TempKey, admin_url: &str, stop: &Shutdown) -> (SocketAddr, SocketAddr) {
    let suffix = Uuid::now_v7().simple().to_string();
    let order_db = create_database(admin_url, &format!("lab_check_token_order_{suffix}"))
        .await
        .unwrap();
    let approval_db = create_database(admin_url, &format!("lab_check_token_approval_{suffix}"))
        .await
        .unwrap();
    let jwks = key.jwks().display().to_string();
    let token_file = key.dir().join("order-svc.token");
    std::fs::write(&token_file, token(key, "approval-svc", &["shop-client"])).unwrap();

    let order = order_svc::Application::build(
        order_svc::Config::try_parse_from([
            "order-svc",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &order_db,
            "--auth-keys",
            &jwks,
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    let order_addr = order.local_addr();
    tokio::spawn(order.run_until(stop.triggered()));
    let approval = approval_svc::Application::build(
        approval_svc::Config::try_parse_from([
            "approval-svc",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &approval_db,
            "--order-svc-url",
            &format!("http://{order_addr}"),
            "--auth-keys",
            &jwks,
            "--order-svc-token-file",
            &token_file.display().to_string(),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    let approval_addr = approval.local_addr();
    tokio::spawn(approval.run_until(stop.triggered()));

    let admin = token(key, "admin", &["shop-admin"]);
    let approver = token(key, "alice", &["approver"]);
    let product = OrderServiceClient::connect(format!("http://{order_addr}"))
        .await
        .unwrap()
        .create_product(bearer(
            order_pb::CreateProductRequest {
                name: "hoodie".into(),
                initial_stock: 3,
                max_per_customer: 0,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    let mut approvals = ApprovalServiceClient::connect(format!("http://{approval_addr}"))
        .await
        .unwrap();
    let challenge = approvals
        .submit_challenge(bearer(
            approval_pb::SubmitChallengeRequest {
                user_id: Uuid::now_v7().to_string(),
                product_id: product.product_id,
                quantity: 1,
                title: "run 10 km".into(),
            },
            &approver,
        ))
        .await
        .unwrap()
        .into_inner()
        .challenge
        .unwrap();
    let approved = approvals
        .approve_challenge(bearer(
            approval_pb::ApproveChallengeRequest {
                challenge_id: challenge.challenge_id,
                approver: "alice".into(),
            },
            &approver,
        ))
        .await
        .unwrap()
        .into_inner()
        .challenge
        .unwrap();
    assert_eq!(
        approved.status(),
        approval_pb::ChallengeStatus::Approved,
        "{approved:?}"
    );
    (order_addr, approval_addr)
}

/// Runs `lab check` against both services with `args` added and `LAB_TOKEN` set to `env`.
async fn lab_check(addrs: (SocketAddr, SocketAddr), args: &[&str], env: Option<&str>) -> Output {
    let (order_addr, approval_addr) = addrs;
    let mut command = Command::new(env!("CARGO_BIN_EXE_lab"));
    command
        .args(["check", "--settle", "10s", "--order-svc-url"])
        .arg(format!("http://{order_addr}"))
        .arg("--approval-svc-url")
        .arg(format!("http://{approval_addr}"))
        .args(args)
        .env_remove("LAB_TOKEN");
    if let Some(token) = env {
        command.env("LAB_TOKEN", token);
    }
    command.output().await.expect("lab runs")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n{}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The check ran and found the approved challenge's order, every invariant holding.
fn assert_clean(output: &Output) {
    assert_eq!(output.status.code(), Some(0), "{}", text(output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("orders: 1 (CREATED 1)"),
        "{}",
        text(output)
    );
}

/// The check could not run: exit 2, the services' refusal with `code` on stderr.
fn assert_refused(output: &Output, code: tonic::Code) {
    assert_eq!(output.status.code(), Some(2), "{}", text(output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(code.description()),
        "{}",
        text(output)
    );
}

#[tokio::test]
async fn lab_check_reads_secured_services_with_a_token_and_is_refused_without() {
    let (admin_url, _throwaway) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let server = tokio::task::spawn_blocking(ThrowawayPostgres::start)
                .await
                .unwrap()
                .expect("DATABASE_URL unset and no PostgreSQL binaries to start one");
            (server.admin_url(), Some(server))
        }
    };
    let key = TempKey::new().unwrap();
    let stop = Shutdown::new();
    let addrs = secured(&key, &admin_url, &stop).await;
    let checker = token(&key, "lab-check", &["approver", "shop-admin"]);

    assert_clean(&lab_check(addrs, &["--token", &checker], None).await);
    assert_clean(&lab_check(addrs, &[], Some(&checker)).await);
    assert_refused(
        &lab_check(addrs, &[], None).await,
        tonic::Code::Unauthenticated,
    );
    // A token without `approver` cannot list every challenge: PERMISSION_DENIED, not a
    // partial report.
    let shop_only = token(&key, "ops", &["operator", "shop-admin"]);
    assert_refused(
        &lab_check(addrs, &["--token", &shop_only], None).await,
        tonic::Code::PermissionDenied,
    );
    stop.trigger();
}
