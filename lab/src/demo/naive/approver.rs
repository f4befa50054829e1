//! A naive approver working on approval-svc's database and calling the real order-svc: read the
//! challenge (no `FOR UPDATE`, no APPROVING state), call CreateOrder with a fresh key, write
//! APPROVED. The problems compose these steps in the orders naive code puts them in.

use std::time::Duration;

use lab_common::metadata::APPROVAL_CLIENT_ID;
use lab_proto::order::v1 as order_pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::demo::setup::{create_order, fresh_key};

/// A challenge as the naive approver reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Challenge {
    /// Its id.
    pub challenge_id: Uuid,
    /// The user (the order's customer).
    pub user_id: Uuid,
    /// The reward.
    pub product_id: Uuid,
    /// Units.
    pub quantity: i32,
    /// `PENDING`, `APPROVED`, …
    pub status: String,
}

/// Why a naive approval stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NaiveError {
    /// The database refused.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// order-svc (or the proxy) answered with an error.
    #[error("CreateOrder: {0}")]
    Shop(#[from] Box<tonic::Status>),
}

/// Reads a challenge: a plain SELECT, nothing locked, so every concurrent reader sees PENDING.
pub(crate) async fn read(db: &PgPool, challenge_id: &str) -> Result<Challenge, NaiveError> {
    let id = Uuid::parse_str(challenge_id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(sqlx::query_as(
        "SELECT challenge_id, user_id, product_id, quantity, status FROM challenges \
         WHERE challenge_id = $1",
    )
    .bind(id)
    .fetch_one(db)
    .await?)
}

/// CreateOrder for the challenge as approval-svc would send it, but with `key` made by the
/// caller (fresh per call, so order-svc cannot recognise a repeat). `deadline`: none means wait
/// for as long as it takes.
pub(crate) async fn order(
    shop: &OrderServiceClient<Channel>,
    challenge: &Challenge,
    key: &str,
    deadline: Option<Duration>,
) -> Result<order_pb::Order, NaiveError> {
    let request = order_pb::CreateOrderRequest {
        product_id: challenge.product_id.to_string(),
        quantity: challenge.quantity,
        customer_id: challenge.user_id.to_string(),
    };
    create_order(shop.clone(), APPROVAL_CLIENT_ID, key, request, deadline)
        .await
        .map_err(|status| NaiveError::Shop(Box::new(status)))
}

/// Writes APPROVED with the order and its key, whatever the row says now (last writer wins).
pub(crate) async fn record_approved(
    db: &PgPool,
    challenge: &Challenge,
    order: &order_pb::Order,
) -> Result<(), NaiveError> {
    let order_id =
        Uuid::parse_str(&order.order_id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    sqlx::query(
        "UPDATE challenges SET status = 'APPROVED', order_id = $2, idempotency_key = $3, \
         attempts = attempts + 1, approver = 'naive', updated_at = now() WHERE challenge_id = $1",
    )
    .bind(challenge.challenge_id)
    .bind(order_id)
    .bind(&order.idempotency_key)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks the challenge APPROVED (with the key about to be used) before any order exists.
/// Needs [`drop_order_backstop`]: the real schema refuses APPROVED without an order.
pub(crate) async fn mark_approved_first(
    db: &PgPool,
    challenge: &Challenge,
    key: &str,
) -> Result<(), NaiveError> {
    sqlx::query(
        "UPDATE challenges SET status = 'APPROVED', idempotency_key = $2, \
         attempts = attempts + 1, approver = 'naive', updated_at = now() WHERE challenge_id = $1",
    )
    .bind(challenge.challenge_id)
    .bind(key)
    .execute(db)
    .await?;
    Ok(())
}

/// Drops the schema's backstop `order_iff_approved` (never APPROVED without an order) on this
/// run's scratch database: it is part of the safeguard the empty-approval demo turns off, and a
/// naive schema would not have it.
pub(crate) async fn drop_order_backstop(db: &PgPool) -> Result<(), NaiveError> {
    sqlx::query("ALTER TABLE challenges DROP CONSTRAINT IF EXISTS order_iff_approved")
        .execute(db)
        .await?;
    Ok(())
}

/// One naive click: read, and if PENDING, order with a fresh key and write APPROVED. Returns the
/// order placed, if any.
pub(crate) async fn click(
    db: &PgPool,
    shop: &OrderServiceClient<Channel>,
    challenge_id: &str,
) -> Result<Option<order_pb::Order>, NaiveError> {
    let challenge = read(db, challenge_id).await?;
    if challenge.status != "PENDING" {
        return Ok(None);
    }
    let order = order(shop, &challenge, &fresh_key(), None).await?;
    record_approved(db, &challenge, &order).await?;
    Ok(Some(order))
}
