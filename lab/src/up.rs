//! `lab up`: the whole system on loopback, one database per service, seeded with a demo product
//! and challenges, until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use lab_common::postgres::{ThrowawayPostgres, create_database};
use lab_common::telemetry::LogFormat;
use lab_proto::approval::v1 as approval_pb;
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1 as order_pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tokio::sync::watch;
use uuid::Uuid;

/// Options of `lab up`.
#[derive(Debug, Parser)]
pub struct UpArgs {
    /// order-svc's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    order_listen: SocketAddr,

    /// approval-svc's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50052")]
    approval_listen: SocketAddr,

    /// PostgreSQL server URL; databases `lab_order` and `lab_approval` are created on it.
    /// Unset: a private throwaway PostgreSQL is started and removed on exit.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,

    /// Stock of the demo product.
    #[arg(long, default_value_t = 3)]
    demo_stock: i64,

    /// Demo challenges to submit (PENDING, ready to approve).
    #[arg(long, default_value_t = 5)]
    demo_challenges: usize,

    /// Start empty: no demo product or challenges.
    #[arg(long)]
    no_seed: bool,
}

/// Runs both services until a shutdown signal, then drains and stops them in order.
pub async fn run(args: UpArgs, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    let (admin_url, throwaway) = match &args.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let server = tokio::task::spawn_blocking(ThrowawayPostgres::start)
                .await?
                .context("starting a throwaway PostgreSQL")?;
            (server.admin_url(), Some(server))
        }
    };
    let order_db = create_database(&admin_url, "lab_order").await?;
    let approval_db = create_database(&admin_url, "lab_approval").await?;

    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };

    let log_format = log_format_flag(log_format);
    let order_config = order_svc::Config::try_parse_from([
        "order-svc",
        "--listen",
        &args.order_listen.to_string(),
        "--database-url",
        &order_db,
        "--log-format",
        log_format,
    ])?;
    let order = order_svc::Application::build(order_config)
        .await
        .context("starting order-svc")?;
    let order_addr = order.local_addr();
    let order_task = tokio::spawn(order.run_until(until_stopped(stopped.clone())));

    let approval_config = approval_svc::Config::try_parse_from([
        "approval-svc",
        "--listen",
        &args.approval_listen.to_string(),
        "--database-url",
        &approval_db,
        "--order-svc-url",
        &format!("http://{order_addr}"),
        "--log-format",
        log_format,
    ])?;
    let approval = approval_svc::Application::build(approval_config)
        .await
        .context("starting approval-svc")?;
    let approval_addr = approval.local_addr();
    let approval_task = tokio::spawn(approval.run_until(until_stopped(stopped.clone())));

    let demo = if args.no_seed {
        None
    } else {
        Some(
            seed(
                order_addr,
                approval_addr,
                args.demo_stock,
                args.demo_challenges,
            )
            .await?,
        )
    };
    print_welcome(order_addr, approval_addr, demo.as_ref());

    lab_common::grpc::shutdown_signal().await;
    let _ = stop.send(true);
    // approval-svc first would be nicer for in-flight approvals, but both drain their own
    // in-flight calls, and the completer rolls forward anything cut short.
    approval_task.await??;
    order_task.await??;
    if let Some(server) = throwaway {
        tokio::task::spawn_blocking(move || drop(server)).await?;
    }
    println!("lab: stopped");
    Ok(ExitCode::SUCCESS)
}

fn log_format_flag(format: LogFormat) -> &'static str {
    match format {
        LogFormat::Pretty => "pretty",
        LogFormat::Json => "json",
    }
}

/// Ids of the seeded demo data.
struct Demo {
    product_id: String,
    challenge_ids: Vec<String>,
}

async fn seed(
    order_addr: SocketAddr,
    approval_addr: SocketAddr,
    stock: i64,
    challenges: usize,
) -> anyhow::Result<Demo> {
    let mut shop = OrderServiceClient::connect(format!("http://{order_addr}")).await?;
    let product = shop
        .create_product(order_pb::CreateProductRequest {
            name: "Limited edition hoodie".into(),
            initial_stock: stock,
            max_per_customer: 0,
        })
        .await?
        .into_inner()
        .product
        .context("CreateProduct returned no product")?;
    let mut approvals = ApprovalServiceClient::connect(format!("http://{approval_addr}")).await?;
    let mut challenge_ids = Vec::with_capacity(challenges);
    for n in 1..=challenges {
        let challenge = approvals
            .submit_challenge(approval_pb::SubmitChallengeRequest {
                user_id: Uuid::now_v7().to_string(),
                product_id: product.product_id.clone(),
                quantity: 1,
                title: format!("Demo challenge #{n}: run 10 km"),
            })
            .await?
            .into_inner()
            .challenge
            .context("SubmitChallenge returned no challenge")?;
        challenge_ids.push(challenge.challenge_id);
    }
    Ok(Demo {
        product_id: product.product_id,
        challenge_ids,
    })
}

fn print_welcome(order_addr: SocketAddr, approval_addr: SocketAddr, demo: Option<&Demo>) {
    println!();
    println!("concurrency-lab is up (Ctrl-C stops everything)");
    println!("  order-svc     {order_addr}   (lab.order.v1.OrderService)");
    println!("  approval-svc  {approval_addr}   (lab.approval.v1.ApprovalService)");
    println!();
    println!("Try:");
    println!("  grpcurl -plaintext {approval_addr} list");
    println!("  grpcurl -plaintext {approval_addr} describe lab.approval.v1.ApprovalService");
    if let Some(demo) = demo {
        let challenge = demo.challenge_ids.first().map_or("<id>", String::as_str);
        println!(
            "  grpcurl -plaintext -d '{{\"challenge_id\":\"{challenge}\",\"approver\":\"alice\"}}' {approval_addr} lab.approval.v1.ApprovalService/ApproveChallenge"
        );
        println!(
            "  grpcurl -plaintext -d '{{\"product_id\":\"{}\"}}' {order_addr} lab.order.v1.OrderService/GetProduct",
            demo.product_id
        );
        println!(
            "  grpcurl -plaintext -d '{{\"product_id\":\"{}\"}}' {order_addr} lab.order.v1.OrderService/ListOrders",
            demo.product_id
        );
        println!(
            "  grpcurl -plaintext -d '{{\"challenge_id\":\"{challenge}\",\"reason\":\"changed my mind\"}}' {approval_addr} lab.approval.v1.ApprovalService/RevokeApproval"
        );
        println!("Pending demo challenges: {}", demo.challenge_ids.join(" "));
    }
    println!();
}
