//! The calls the benchmarks make, each over a set of clients (one per HTTP/2 connection)
//! through the shared load driver, with its outcomes labelled as the report counts them.
// Request messages gain fields (API.md: "add fields freely"); `..Default::default()` keeps
// these literals compiling when one does, even where today it adds nothing.
#![allow(clippy::needless_update)]

use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use lab_proto::approval::v1 as approval_pb;
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1 as pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::transport::Channel;
use uuid::Uuid;

use super::load::{self, Load, Shape};

/// `connections` HTTP/2 connections to `url` (each `Channel` is one), wrapped by `client`.
pub(super) async fn connect<C>(
    url: &str,
    connections: usize,
    client: impl Fn(Channel) -> C,
) -> anyhow::Result<Vec<C>> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = Channel::from_shared(url.to_owned())?
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        clients.push(client(channel));
    }
    Ok(clients)
}

pub(super) async fn create_product(
    client: &OrderServiceClient<Channel>,
    name: &str,
    stock: i64,
) -> anyhow::Result<String> {
    let product = client
        .clone()
        .create_product(pb::CreateProductRequest {
            name: format!("bench {name}"),
            initial_stock: stock,
            ..Default::default()
        })
        .await
        .context("CreateProduct")?
        .into_inner()
        .product
        .context("CreateProduct returned no product")?;
    Ok(product.product_id)
}

pub(super) async fn ledger(
    client: &OrderServiceClient<Channel>,
    product_id: &str,
) -> anyhow::Result<pb::ProductLedger> {
    client
        .clone()
        .get_product_ledger(pb::GetProductLedgerRequest {
            product_id: product_id.to_owned(),
        })
        .await
        .context("GetProductLedger")?
        .into_inner()
        .ledger
        .context("GetProductLedger returned no ledger")
}

/// Idempotency-key prefix of the measured CreateOrder calls.
pub(super) const MEASURED_KEYS: &str = "bench";
/// Idempotency-key prefix of the warm-up's calls, which must never replay a measured one.
pub(super) const WARMUP_KEYS: &str = "bench-warm-up";

/// CreateOrder for one unit of `product_id`, call `n` under key `<key_prefix>-<n>` and a
/// customer of its own.
pub(super) async fn create_orders(
    clients: &[OrderServiceClient<Channel>],
    shape: Shape,
    label: &str,
    product_id: String,
    key_prefix: &'static str,
) -> Load {
    let product_id: Arc<str> = product_id.into();
    load::drive(clients, shape, label, move |mut client, n| {
        let product_id = product_id.clone();
        async move {
            let mut request = tonic::Request::new(pb::CreateOrderRequest {
                product_id: product_id.to_string(),
                quantity: 1,
                customer_id: Uuid::now_v7().to_string(),
                ..Default::default()
            });
            if let Ok(key) = format!("{key_prefix}-{n}").parse() {
                request.metadata_mut().insert("idempotency-key", key);
            }
            match client.create_order(request).await {
                Ok(response) if response.metadata().contains_key("idempotent-replayed") => {
                    "REPLAYED".to_owned()
                }
                Ok(_) => "CREATED".to_owned(),
                Err(status) => order_error_label(&status),
            }
        }
    })
    .await
}

/// `OUT_OF_STOCK` for the refusal a flash sale expects, else `error/<CODE>[/<REASON>]`.
fn order_error_label(status: &tonic::Status) -> String {
    match lab_common::status::reason(status) {
        Some(reason) if reason == "OUT_OF_STOCK" => reason,
        Some(reason) => format!(
            "error/{}/{reason}",
            lab_drill::load::code_name(status.code())
        ),
        None => format!("error/{}", lab_drill::load::code_name(status.code())),
    }
}

/// Submits `shape.calls` challenges for one unit each; returns their ids. Any failure fails
/// the phase: the flood would then measure less than it says.
pub(super) async fn submit_challenges(
    clients: &[ApprovalServiceClient<Channel>],
    shape: Shape,
    product_id: &str,
) -> anyhow::Result<Vec<String>> {
    let ids = Arc::new(Mutex::new(vec![String::new(); shape.calls]));
    let (recorded, product_id) = (ids.clone(), product_id.to_owned());
    let load = load::drive(
        clients,
        shape,
        "submitting challenges",
        move |mut client, n| {
            let (recorded, product_id) = (recorded.clone(), product_id.clone());
            async move {
                let result = client
                    .submit_challenge(approval_pb::SubmitChallengeRequest {
                        user_id: Uuid::now_v7().to_string(),
                        product_id,
                        quantity: 1,
                        title: format!("bench challenge {n}"),
                        ..Default::default()
                    })
                    .await;
                match result.map(|response| response.into_inner().challenge) {
                    Ok(Some(challenge)) => {
                        recorded
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())[n] =
                            challenge.challenge_id;
                        "SUBMITTED".to_owned()
                    }
                    Ok(None) => "error/NO_CHALLENGE".to_owned(),
                    Err(status) => lab_drill::load::outcome_label(&Err(status)),
                }
            }
        },
    )
    .await;
    let submitted = load.outcomes.get("SUBMITTED");
    if submitted != shape.calls as u64 {
        bail!(
            "only {submitted} of {} challenges were submitted: {}",
            shape.calls,
            load.outcomes
        );
    }
    let ids = std::mem::take(&mut *ids.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    Ok(ids)
}

/// ApproveChallenge, call `n` on challenge `n`.
pub(super) async fn approve(
    clients: &[ApprovalServiceClient<Channel>],
    shape: Shape,
    label: &str,
    challenges: Vec<String>,
) -> Load {
    let challenges = Arc::new(challenges);
    load::drive(clients, shape, label, move |mut client, n| {
        let challenges = challenges.clone();
        async move {
            let result = client
                .approve_challenge(approval_pb::ApproveChallengeRequest {
                    challenge_id: challenges[n].clone(),
                    approver: "bench".into(),
                    ..Default::default()
                })
                .await
                .and_then(|response| {
                    response
                        .into_inner()
                        .challenge
                        .ok_or_else(|| tonic::Status::internal("no challenge in the answer"))
                });
            lab_drill::load::outcome_label(&result)
        }
    })
    .await
}
