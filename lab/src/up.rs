//! `lab up`: the whole system on loopback, one database per service, seeded with a demo product
//! and challenges, until Ctrl-C or SIGTERM.
//!
//! With `--order-instances N` / `--approval-instances M` it runs several instances of each on
//! their service's one database, as replicas behind a balancer: instance 0 of each keeps its
//! `--*-listen` address, the others take the consecutive ports after the higher of the two (by
//! default order-svc 50051, 50053, 50054…, then approval-svc 50052, 50055…), and every
//! approval-svc gets the list of every order-svc instance as `--order-svc-url`.
//!
//! Authentication is on: a fresh dev signing key (in a private directory removed on exit)
//! verifies bearer tokens, approval-svc presents a `shop-client` token to order-svc, and the
//! welcome prints ready tokens for each role. `--insecure` keeps the open mode instead.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use lab_common::postgres::{ThrowawayPostgres, create_database};
use lab_common::shutdown::Shutdown;
use lab_common::telemetry::LogFormat;
use lab_proto::approval::v1 as approval_pb;
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1 as order_pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use uuid::Uuid;

/// Options of `lab up`.
#[derive(Debug, Parser)]
pub(crate) struct UpArgs {
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

    /// order-svc instances on the one shop database (a local picture of replicas behind a
    /// balancer; approval-svc balances over all of them).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=32))]
    order_instances: u16,

    /// approval-svc instances on the one approvals database (they share the work through
    /// row locks and leases).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=32))]
    approval_instances: u16,

    /// Serve without authentication (open mode, loopback only) instead of with a fresh dev key.
    #[arg(long)]
    insecure: bool,
}

/// The dev key of one `lab up`, approval-svc's token file, and a ready token per role.
struct DevAuth {
    key: lab_common::auth::issue::TempKey,
    approver: String,
    operator: String,
    shop_admin: String,
    /// `lab check`'s: it lists every challenge and reads every order and ledger.
    checker: String,
    user: (String, String),
}

/// The `sub` of approval-svc's token: order-svc scopes its idempotency keys to it, and the
/// checkers look for approval-svc's orders under it.
const APPROVAL_SUBJECT: &str = lab_common::metadata::APPROVAL_CLIENT_ID;

impl DevAuth {
    fn new() -> anyhow::Result<Self> {
        let key = lab_common::auth::issue::TempKey::new()?;
        let token = |subject: &str, roles: &[&str]| {
            key.signer().token(&lab_common::auth::issue::TokenSpec {
                subject: subject.to_owned(),
                roles: roles.iter().map(|role| (*role).to_owned()).collect(),
                // Outlives any demo session; the key dies with this `lab up`.
                ttl: std::time::Duration::from_secs(7 * 24 * 3600),
                ..Default::default()
            })
        };
        std::fs::write(
            key.dir().join("order-svc.token"),
            token(APPROVAL_SUBJECT, &["shop-client"])?,
        )?;
        let user = Uuid::now_v7().to_string();
        Ok(Self {
            approver: token("alice", &["approver"])?,
            operator: token("ops", &["operator"])?,
            shop_admin: token("shop-admin", &["shop-admin"])?,
            checker: token("lab-check", &["approver", "shop-admin"])?,
            user: (token(&user, &["user"])?, user),
            key,
        })
    }

    fn path(&self, name: &str) -> String {
        self.key.dir().join(name).display().to_string()
    }

    /// The services' flags: order-svc's, then approval-svc's.
    fn flags(&self) -> (Vec<String>, Vec<String>) {
        let keys = vec!["--auth-keys".to_owned(), self.path("jwks.json")];
        let mut approval = keys.clone();
        approval.extend([
            "--order-svc-token-file".to_owned(),
            self.path("order-svc.token"),
        ]);
        (keys, approval)
    }
}

/// `request` with `token` as its bearer token, when there is one.
fn authorized<T>(message: T, token: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    Ok(request)
}

/// Where each instance listens: instance 0 of each service on its `--*-listen` address, the
/// others on the consecutive ports after the higher of those two (order-svc's first), or on
/// port 0 (any free port) when that address asks for one.
fn instance_addrs(
    order_listen: SocketAddr,
    approval_listen: SocketAddr,
    order_instances: u16,
    approval_instances: u16,
) -> anyhow::Result<(Vec<SocketAddr>, Vec<SocketAddr>)> {
    let mut next_port = order_listen.port().max(approval_listen.port());
    let mut next = |first: SocketAddr| -> anyhow::Result<SocketAddr> {
        if first.port() == 0 {
            return Ok(first);
        }
        next_port = next_port
            .checked_add(1)
            .context("the instances' ports run past 65535")?;
        Ok(SocketAddr::new(first.ip(), next_port))
    };
    let mut orders = vec![order_listen];
    for _ in 1..order_instances {
        orders.push(next(order_listen)?);
    }
    let mut approvals = vec![approval_listen];
    for _ in 1..approval_instances {
        approvals.push(next(approval_listen)?);
    }
    Ok((orders, approvals))
}

/// Runs both services until a shutdown signal, then drains and stops them in order.
pub(crate) async fn run(args: UpArgs, log_format: LogFormat) -> anyhow::Result<ExitCode> {
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

    let stop = Shutdown::new();
    let auth = (!args.insecure).then(DevAuth::new).transpose()?;
    let (order_auth, approval_auth) = auth.as_ref().map(DevAuth::flags).unwrap_or_default();

    let log_format = log_format_flag(log_format);
    let (order_listens, approval_listens) = instance_addrs(
        args.order_listen,
        args.approval_listen,
        args.order_instances,
        args.approval_instances,
    )?;
    let mut order_addrs = Vec::with_capacity(order_listens.len());
    let mut order_tasks = Vec::with_capacity(order_listens.len());
    // One after the other: each applies the migrations, which must not race on one database.
    for listen in &order_listens {
        let order_config = order_svc::Config::try_parse_from(
            [
                "order-svc",
                "--listen",
                &listen.to_string(),
                "--database-url",
                &order_db,
                "--log-format",
                log_format,
            ]
            .into_iter()
            .chain(order_auth.iter().map(String::as_str)),
        )?;
        let order = order_svc::Application::build(order_config)
            .await
            .with_context(|| format!("starting order-svc on {listen}"))?;
        order_addrs.push(order.local_addr());
        order_tasks.push(tokio::spawn(order.run_until(stop.triggered())));
    }
    let order_urls = order_addrs
        .iter()
        .map(|addr| format!("http://{addr}"))
        .collect::<Vec<_>>()
        .join(",");

    let mut approval_addrs = Vec::with_capacity(approval_listens.len());
    let mut approval_tasks = Vec::with_capacity(approval_listens.len());
    for listen in &approval_listens {
        let approval_config = approval_svc::Config::try_parse_from(
            [
                "approval-svc",
                "--listen",
                &listen.to_string(),
                "--database-url",
                &approval_db,
                "--order-svc-url",
                &order_urls,
                "--log-format",
                log_format,
            ]
            .into_iter()
            .chain(approval_auth.iter().map(String::as_str)),
        )?;
        let approval = approval_svc::Application::build(approval_config)
            .await
            .with_context(|| format!("starting approval-svc on {listen}"))?;
        approval_addrs.push(approval.local_addr());
        approval_tasks.push(tokio::spawn(approval.run_until(stop.triggered())));
    }

    let demo = if args.no_seed {
        None
    } else {
        Some(
            seed(
                order_addrs[0],
                approval_addrs[0],
                args.demo_stock,
                args.demo_challenges,
                auth.as_ref(),
            )
            .await?,
        )
    };
    print_welcome(&order_addrs, &approval_addrs, demo.as_ref(), auth.as_ref());

    lab_common::shutdown::signal().await;
    stop.trigger();
    // approval-svc first would be nicer for in-flight approvals, but both drain their own
    // in-flight calls, and the completer rolls forward anything cut short.
    for task in approval_tasks {
        task.await??;
    }
    for task in order_tasks {
        task.await??;
    }
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
    auth: Option<&DevAuth>,
) -> anyhow::Result<Demo> {
    let mut shop = OrderServiceClient::connect(format!("http://{order_addr}")).await?;
    let product = shop
        .create_product(authorized(
            order_pb::CreateProductRequest {
                name: "Limited edition hoodie".into(),
                initial_stock: stock,
                max_per_customer: 0,
            },
            auth.map(|auth| auth.shop_admin.as_str()),
        )?)
        .await?
        .into_inner()
        .product
        .context("CreateProduct returned no product")?;
    let mut approvals = ApprovalServiceClient::connect(format!("http://{approval_addr}")).await?;
    let mut challenge_ids = Vec::with_capacity(challenges);
    for n in 1..=challenges {
        let challenge = approvals
            .submit_challenge(authorized(
                approval_pb::SubmitChallengeRequest {
                    user_id: Uuid::now_v7().to_string(),
                    product_id: product.product_id.clone(),
                    quantity: 1,
                    title: format!("Demo challenge #{n}: run 10 km"),
                },
                auth.map(|auth| auth.approver.as_str()),
            )?)
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

fn print_welcome(
    order_addrs: &[SocketAddr],
    approval_addrs: &[SocketAddr],
    demo: Option<&Demo>,
    auth: Option<&DevAuth>,
) {
    let (order_addr, approval_addr) = (order_addrs[0], approval_addrs[0]);
    // grpcurl's flag for a role's token, after the `export` lines below.
    let as_role = |variable: &str| match auth {
        Some(_) => format!("-H \"authorization: Bearer ${variable}\" "),
        None => String::new(),
    };
    let (approver, operator, admin) = (
        as_role("APPROVER_TOKEN"),
        as_role("OPERATOR_TOKEN"),
        as_role("SHOP_ADMIN_TOKEN"),
    );
    println!();
    println!("concurrency-lab is up (Ctrl-C stops everything)");
    println!("  order-svc     {order_addr}   (lab.order.v1.OrderService)");
    println!("  approval-svc  {approval_addr}   (lab.approval.v1.ApprovalService)");
    let several = order_addrs.len() > 1 || approval_addrs.len() > 1;
    if several {
        for (n, addr) in order_addrs.iter().enumerate().skip(1) {
            println!("  order-svc #{n}  {addr}   (same shop database)");
        }
        for (n, addr) in approval_addrs.iter().enumerate().skip(1) {
            println!("  approval-svc #{n}  {addr}   (same approvals database)");
        }
        let urls: Vec<String> = order_addrs.iter().map(|a| format!("http://{a}")).collect();
        println!(
            "  every approval-svc balances over --order-svc-url {}",
            urls.join(",")
        );
    }
    match auth {
        Some(auth) => {
            println!();
            println!(
                "Authentication is on (dev key in {}; `lab up --insecure` for open mode). Tokens:",
                auth.key.dir().display()
            );
            println!("  export APPROVER_TOKEN={}   # sub alice", auth.approver);
            println!("  export OPERATOR_TOKEN={}", auth.operator);
            println!("  export SHOP_ADMIN_TOKEN={}", auth.shop_admin);
            println!(
                "  export USER_TOKEN={}   # role user, sub (user_id) {}",
                auth.user.0, auth.user.1
            );
        }
        None => println!("Authentication is off (--insecure)."),
    }
    println!();
    println!("Try:");
    println!("  grpcurl -plaintext {approval_addr} list");
    println!("  grpcurl -plaintext {approval_addr} describe lab.approval.v1.ApprovalService");
    if let Some(demo) = demo {
        let challenge = demo.challenge_ids.first().map_or("<id>", String::as_str);
        println!(
            "  grpcurl -plaintext {approver}-d '{{\"challenge_id\":\"{challenge}\",\"approver\":\"alice\"}}' {approval_addr} lab.approval.v1.ApprovalService/ApproveChallenge"
        );
        println!(
            "  grpcurl -plaintext {admin}-d '{{\"product_id\":\"{}\"}}' {order_addr} lab.order.v1.OrderService/GetProduct",
            demo.product_id
        );
        println!(
            "  grpcurl -plaintext {admin}-d '{{\"product_id\":\"{}\"}}' {order_addr} lab.order.v1.OrderService/ListOrders",
            demo.product_id
        );
        println!(
            "  grpcurl -plaintext {approver}-d '{{\"challenge_id\":\"{challenge}\",\"reason\":\"changed my mind\"}}' {approval_addr} lab.approval.v1.ApprovalService/RevokeApproval"
        );
        println!("Pending demo challenges: {}", demo.challenge_ids.join(" "));
    }
    println!(
        "  grpcurl -plaintext {operator}{order_addr} lab.order.v1.OpsService/ListAuditEvents   # the shop's audit trail"
    );
    let check_token = auth.map_or_else(String::new, |auth| format!(" --token {}", auth.checker));
    println!(
        "  lab check --approval-svc-url http://{approval_addr} --order-svc-url http://{order_addr}{check_token}   # invariants I1-I6"
    );
    if several {
        println!("Each instance answers on its own:");
        for (n, addr) in order_addrs.iter().enumerate() {
            println!("  grpcurl -plaintext {addr} grpc.health.v1.Health/Check   # order-svc #{n}");
        }
        for (n, addr) in approval_addrs.iter().enumerate() {
            println!(
                "  grpcurl -plaintext {operator}{addr} lab.approval.v1.OpsService/GetCircuitBreaker   # approval-svc #{n}"
            );
        }
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_of_each_keeps_the_given_addresses() {
        let (orders, approvals) =
            instance_addrs(addr("127.0.0.1:50051"), addr("127.0.0.1:50052"), 1, 1).unwrap();
        assert_eq!(orders, [addr("127.0.0.1:50051")]);
        assert_eq!(approvals, [addr("127.0.0.1:50052")]);
    }

    #[test]
    fn more_instances_take_the_ports_after_both() {
        let (orders, approvals) =
            instance_addrs(addr("127.0.0.1:50051"), addr("127.0.0.1:50052"), 3, 2).unwrap();
        assert_eq!(
            orders,
            [
                addr("127.0.0.1:50051"),
                addr("127.0.0.1:50053"),
                addr("127.0.0.1:50054")
            ]
        );
        assert_eq!(
            approvals,
            [addr("127.0.0.1:50052"), addr("127.0.0.1:50055")]
        );
    }

    #[test]
    fn port_zero_stays_any_free_port() {
        let (orders, approvals) =
            instance_addrs(addr("127.0.0.1:0"), addr("127.0.0.1:0"), 2, 2).unwrap();
        assert_eq!(orders, [addr("127.0.0.1:0"), addr("127.0.0.1:0")]);
        assert_eq!(approvals, [addr("127.0.0.1:0"), addr("127.0.0.1:0")]);
    }

    #[test]
    fn ports_past_the_last_are_refused() {
        assert!(instance_addrs(addr("127.0.0.1:65535"), addr("127.0.0.1:50052"), 2, 1).is_err());
    }
}
