//! What operators and tools rely on: health, reflection, request ids, and the binary's
//! start-up line and graceful exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use lab_proto::approval::v1 as apb;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::helpers::*;

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_request_ids() {
    bounded(async {
        let mut config = ApprovalSvc::config(
            &fresh_database().await,
            &format!("http://{}", dead_address()),
        );
        config.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let approval = ApprovalSvc::start(config).await;
        let url = format!("http://{}", approval.addr);
        let metrics_addr = approval.metrics_addr.expect("metrics endpoint bound");

        let mut health = HealthClient::new(channel(&url).await);
        let serving = health
            .check(HealthCheckRequest {
                service: "lab.approval.v1.ApprovalService".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(serving.status, i32::from(ServingStatus::Serving));

        let mut reflection = ServerReflectionClient::new(channel(&url).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer");
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(
            names.contains(&"lab.approval.v1.ApprovalService"),
            "{names:?}"
        );
        assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

        let mut request = tonic::Request::new(apb::GetChallengeRequest {
            challenge_id: uuid::Uuid::now_v7().to_string(),
        });
        request
            .metadata_mut()
            .insert("x-request-id", "test-request-1".parse().unwrap());
        let status = approval
            .client()
            .await
            .get_challenge(request)
            .await
            .unwrap_err();
        assert_eq!(
            status.metadata().get("x-request-id").unwrap(),
            "test-request-1",
            "the request id is echoed, even on errors"
        );

        let metrics = http_get(metrics_addr, "/metrics").await;
        assert!(metrics.contains("grpc_server_handled_total"), "{metrics}");
        assert!(
            metrics.contains(r#"grpc_method="GetChallenge""#)
                && metrics.contains(r#"grpc_code="NotFound""#),
            "{metrics}"
        );
        assert!(metrics.contains("resilience_breaker_state"), "{metrics}");
        assert!(
            http_get(metrics_addr, "/healthz")
                .await
                .starts_with("HTTP/1.1 200")
        );
    })
    .await;
}

/// The binary logs exactly one `listening on <addr>` line, serves, and exits 0 on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_announces_its_address_and_exits_cleanly_on_sigterm() {
    bounded(async {
        let database = fresh_database().await;
        let mut child = Command::new(env!("CARGO_BIN_EXE_approval-svc"))
            .env("DATABASE_URL", &database)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("ORDER_SVC_URL", format!("http://{}", dead_address()))
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let mut seen = Vec::new();
        let addr = loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.recv())
                .await
                .expect("the binary starts")
                .expect("the binary is running");
            seen.push(line.clone());
            if let Some(at) = line.find("listening on ") {
                let rest = &line[at + "listening on ".len()..];
                let addr: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                break addr;
            }
        };
        let mut health = HealthClient::new(channel(&format!("http://{addr}")).await);
        health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();

        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "exit status {status:?}");
        while let Ok(line) = lines.try_recv() {
            seen.push(line);
        }
        let listening = seen.iter().filter(|l| l.contains("listening on")).count();
        assert_eq!(listening, 1, "{seen:#?}");
    })
    .await;
}
