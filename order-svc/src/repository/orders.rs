//! Orders: the idempotent, contention-safe CreateOrder and the exactly-once CancelOrder.

use std::time::Duration;

use lab_common::audit::{self, Caller};
use lab_common::paging::PageRequest;
use lab_common::reason::Reason;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, PgExecutor, PgPool, Row};
use uuid::Uuid;

use crate::domain::{IdempotencyScope, NewOrder, Order, OrderFilter};
use crate::error::OrderError;
use crate::repository::STOCK_CHANNEL;
use crate::repository::audited::{CANCEL_ORDER, CREATE_ORDER, commit_with_event};

const ORDER_COLUMNS: &str = "order_id, product_id, quantity, customer_id, status, client_id, \
     idempotency_key, cancel_reason, created_at, updated_at, cancelled_at";

/// What CreateOrder did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// A new order was created and stock taken.
    Created(Order),
    /// The key was claimed before by the same request: its order, unchanged.
    Replayed(Order),
}

/// One CreateOrder of a batch, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceRequest {
    /// Who asks, and under which key.
    pub scope: IdempotencyScope,
    /// The order asked for.
    pub order: NewOrder,
    /// Who called, under which request id, for the audit trail.
    pub caller: Caller,
}

/// What one call of [`place_orders`] settled.
#[derive(Debug)]
pub struct PlacedBatch {
    /// Each request's answer, in the order the requests were given.
    pub outcomes: Vec<Result<CreateOutcome, OrderError>>,
    /// The product's stock as the batch committed; `None` when there is no such product.
    pub stock_after: Option<i64>,
}

/// What `place_orders` decided for one request: its `outcome` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Created,
    Replayed,
    Reused,
    ProductNotFound,
    OutOfStock,
    CustomerLimit,
    /// The key's order vanished or appeared while the batch settled; a retry replays it.
    Contended,
}

impl Decision {
    const ALL: [Self; 7] = [
        Self::Created,
        Self::Replayed,
        Self::Reused,
        Self::ProductNotFound,
        Self::OutOfStock,
        Self::CustomerLimit,
        Self::Contended,
    ];

    /// The function's spelling.
    const fn label(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Replayed => "replayed",
            Self::Reused => "reused",
            Self::ProductNotFound => "product_not_found",
            Self::OutOfStock => "out_of_stock",
            Self::CustomerLimit => "customer_limit",
            Self::Contended => "contended",
        }
    }

    /// The outcome the audit trail records: the reason of the refusal [`slot_outcome`]
    /// answers.
    const fn audit_outcome(self) -> &'static str {
        match self {
            Self::Created => audit::OK,
            Self::Replayed => audit::REPLAYED,
            Self::Reused => Reason::IdempotencyKeyReused.as_str(),
            Self::ProductNotFound => Reason::ProductNotFound.as_str(),
            Self::OutOfStock => Reason::OutOfStock.as_str(),
            Self::CustomerLimit => Reason::CustomerLimitReached.as_str(),
            Self::Contended => Reason::IdempotencyKeyInUse.as_str(),
        }
    }

    /// Anything the function never says counts as contended: a retry finds out.
    fn of(label: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|decision| decision.label() == label)
            .unwrap_or(Self::Contended)
    }
}

/// The batch's one statement: `place_orders` (its semantics are the migration's), and each
/// request's audit event written from its row, committed with the orders. The events' outcomes
/// are only known once the function has decided, so they are written by a data-modifying CTE
/// over its rows rather than by a second statement: the hot product row, locked until commit,
/// waits for no extra round trip. `placed` is read twice, hence materialized: the function
/// runs once. A request's target is its order (created or replayed), else the product.
const PLACE_ORDERS: &str = "
    WITH placed AS (
        SELECT * FROM place_orders($1, $2, $3, $4, $5, $6, $7, $8)
    ),
    audited AS (
        INSERT INTO audit_events (event_id, actor, action, target_id, outcome, request_id)
        SELECT caller.event_id, caller.actor, $9, coalesce(placed.order_id, $1)::text,
               coalesce(($11::text[])[array_position($10::text[], placed.outcome)],
                        placed.outcome),
               caller.request_id
        FROM placed
        JOIN unnest($12::uuid[], $13::text[], $14::text[])
             WITH ORDINALITY AS caller(event_id, actor, request_id, slot)
          ON caller.slot = placed.slot
    )
    SELECT * FROM placed";

/// Creates orders for one product, or replays the ones their keys already produced, in one
/// call of the `place_orders` function (see its migration), writing each request's audit event
/// in the same statement (`PLACE_ORDERS`): one round trip, one transaction, one lock of the
/// product row and one commit for the whole batch.
///
/// Each request is answered as if it had been alone, the requests taken one after the other in
/// the given order: the order holding (client, key) decides, however long ago it was created
/// (after the key's claim was reaped the same request replays it and a different one is refused
/// with [`OrderError::KeyReused`]); stock is taken greedily in that order, so no request is
/// refused while the stock left at its turn covers it; refusals (OUT_OF_STOCK,
/// PRODUCT_NOT_FOUND, CUSTOMER_LIMIT_REACHED) write nothing but their audit events and do not
/// consume the key. Only a failure of the call itself is an `Err`, and then nothing of the batch
/// was written, events included.
pub async fn place_orders(
    pool: &PgPool,
    product_id: Uuid,
    requests: &[PlaceRequest],
    retention: Duration,
) -> Result<PlacedBatch, sqlx::Error> {
    let mut client_ids = Vec::with_capacity(requests.len());
    let mut keys = Vec::with_capacity(requests.len());
    let mut fingerprints = Vec::with_capacity(requests.len());
    let mut order_ids = Vec::with_capacity(requests.len());
    let mut quantities = Vec::with_capacity(requests.len());
    let mut customer_ids = Vec::with_capacity(requests.len());
    let mut event_ids = Vec::with_capacity(requests.len());
    let mut actors = Vec::with_capacity(requests.len());
    let mut request_ids = Vec::with_capacity(requests.len());
    for request in requests {
        client_ids.push(request.scope.client_id.as_str());
        keys.push(request.scope.key.as_str());
        fingerprints.push(request.order.fingerprint());
        order_ids.push(Uuid::now_v7());
        quantities.push(request.order.quantity);
        customer_ids.push(request.order.customer_id);
        event_ids.push(Uuid::now_v7());
        actors.push(request.caller.actor.as_str());
        request_ids.push(request.caller.request_id.as_str());
    }
    let rows = sqlx::query(PLACE_ORDERS)
        .bind(product_id)
        .bind(&client_ids)
        .bind(&keys)
        .bind(&fingerprints)
        .bind(&order_ids)
        .bind(&quantities)
        .bind(&customer_ids)
        .bind(retention.as_secs_f64())
        .bind(CREATE_ORDER)
        .bind(Decision::ALL.map(Decision::label).as_slice())
        .bind(Decision::ALL.map(Decision::audit_outcome).as_slice())
        .bind(&event_ids)
        .bind(&actors)
        .bind(&request_ids)
        .fetch_all(pool)
        .await?;
    let mut outcomes: Vec<Option<Result<CreateOutcome, OrderError>>> =
        requests.iter().map(|_| None).collect();
    let mut stock_after = None;
    for row in &rows {
        let slot: i32 = row.try_get("slot")?;
        stock_after = row.try_get("stock_after")?;
        // Slots are 1-based positions in the arrays; anything else is left unanswered.
        let Some(index) = usize::try_from(slot)
            .ok()
            .and_then(|slot| slot.checked_sub(1))
        else {
            continue;
        };
        let Some(request) = requests.get(index) else {
            continue;
        };
        outcomes[index] = Some(slot_outcome(row, product_id, &request.order));
    }
    let outcomes = outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or(Err(OrderError::Unanswered)))
        .collect();
    Ok(PlacedBatch {
        outcomes,
        stock_after,
    })
}

/// One request's answer from its row of `place_orders`.
fn slot_outcome(
    row: &PgRow,
    product_id: Uuid,
    order: &NewOrder,
) -> Result<CreateOutcome, OrderError> {
    let outcome: String = row.try_get("outcome")?;
    match Decision::of(&outcome) {
        Decision::Created => Ok(CreateOutcome::Created(Order::from_row(row)?)),
        Decision::Replayed => Ok(CreateOutcome::Replayed(Order::from_row(row)?)),
        Decision::Reused => Err(OrderError::KeyReused),
        Decision::ProductNotFound => Err(OrderError::ProductNotFound(product_id)),
        Decision::OutOfStock => Err(OrderError::OutOfStock {
            product_id,
            requested: order.quantity,
            available: row.try_get::<Option<i64>, _>("available")?.unwrap_or(0),
        }),
        Decision::CustomerLimit => Err(OrderError::CustomerLimitReached {
            product_id,
            requested: order.quantity,
            limit: row
                .try_get::<Option<i32>, _>("customer_limit")?
                .unwrap_or(0),
            held: row.try_get::<Option<i64>, _>("customer_held")?.unwrap_or(0),
        }),
        // The key's claim vanished between its insert and its read (the reaper expired it), or
        // an order holding the key committed without one: retrying replays it.
        Decision::Contended => Err(OrderError::KeyContended),
    }
}

/// Reads one order.
pub async fn get_order<'e>(
    executor: impl PgExecutor<'e>,
    order_id: Uuid,
) -> Result<Order, OrderError> {
    sqlx::query_as::<_, Order>(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1"
    )))
    .bind(order_id)
    .fetch_optional(executor)
    .await?
    .ok_or(OrderError::OrderNotFound(order_id))
}

/// The order created under the caller's key. There is at most one, ever: the key's claim
/// expires, but the order keeps holding the key (constraint `orders_one_per_key`).
pub async fn lookup_order(pool: &PgPool, scope: &IdempotencyScope) -> Result<Order, OrderError> {
    sqlx::query_as::<_, Order>(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders
         WHERE client_id = $1 AND idempotency_key = $2"
    )))
    .bind(&scope.client_id)
    .bind(&scope.key)
    .fetch_optional(pool)
    .await?
    .ok_or(OrderError::KeyNotFound)
}

/// One page of orders in id (creation) order.
pub async fn list_orders(
    pool: &PgPool,
    filter: OrderFilter,
    page: PageRequest,
) -> Result<(Vec<Order>, String), OrderError> {
    let rows = sqlx::query_as::<_, Order>(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders
         WHERE ($1::uuid IS NULL OR product_id = $1)
           AND ($2::uuid IS NULL OR customer_id = $2)
           AND ($3::text IS NULL OR status = $3)
           AND ($4::uuid IS NULL OR order_id > $4)
           AND ($6::text IS NULL OR client_id = $6)
           AND ($7::timestamptz IS NULL OR created_at >= $7)
         ORDER BY order_id LIMIT $5"
    )))
    .bind(filter.product_id)
    .bind(filter.customer_id)
    .bind(filter.status.map(|status| status.as_str()))
    .bind(page.after)
    .bind(page.fetch_limit())
    .bind(filter.client_id.as_deref())
    .bind(filter.created_after)
    .fetch_all(pool)
    .await?;
    Ok(page.finish(rows, |order| order.order_id))
}

/// Cancels an order and returns its stock, exactly once; the flag says whether this call did it.
/// With `owner`, only that client's order: another's is [`OrderError::OrderNotFound`]. Records
/// `caller`'s event in the cancel's transaction.
///
/// One statement cancels: the order's `UPDATE … WHERE status = 'CREATED'` locks the row, so a
/// concurrent cancel waits, re-checks the condition, finds the order cancelled and restores
/// nothing. When it returns stock it notifies [`STOCK_CHANNEL`] in the same transaction, so
/// every instance drops its sold-out flag for the product once the units are really back. The
/// order is read after the commit, so the product row is not held for that read.
pub async fn cancel_order(
    pool: &PgPool,
    caller: &Caller,
    order_id: Uuid,
    reason: &str,
    owner: Option<&str>,
) -> Result<(Order, bool), OrderError> {
    let mut transaction = pool.begin().await?;
    let decided = match cancel(&mut transaction, order_id, reason, owner).await {
        Ok(true) => Ok(true),
        // Nothing cancelled now: the order is cancelled already (the call still gets what it
        // asked for), or not one the caller may see.
        Ok(false) => get_order(&mut *transaction, order_id)
            .await
            .and_then(|order| match owner {
                Some(owner) if owner != order.client_id => Err(OrderError::OrderNotFound(order_id)),
                _ => Ok(false),
            }),
        Err(error) => Err(error),
    };
    let restored = commit_with_event(transaction, caller, CANCEL_ORDER, order_id, decided).await?;
    Ok((get_order(pool, order_id).await?, restored))
}

/// The cancel's one statement; true when it cancelled the order (and returned its stock).
async fn cancel(
    connection: &mut PgConnection,
    order_id: Uuid,
    reason: &str,
    owner: Option<&str>,
) -> Result<bool, OrderError> {
    let cancelled = sqlx::query(
        "WITH cancelled AS (
             UPDATE orders
             SET status = 'CANCELLED', cancel_reason = $2, cancelled_at = now(), updated_at = now()
             WHERE order_id = $1 AND status = 'CREATED' AND ($4::text IS NULL OR client_id = $4)
             RETURNING product_id, quantity
         ),
         restored AS (
             UPDATE products p
             SET stock = p.stock + c.quantity, updated_at = now()
             FROM cancelled c
             WHERE p.product_id = c.product_id
             RETURNING p.product_id
         )
         SELECT pg_notify($3, restored.product_id::text) FROM restored",
    )
    .bind(order_id)
    .bind(reason)
    .bind(STOCK_CHANNEL)
    .bind(owner)
    .execute(connection)
    .await?
    .rows_affected()
        == 1;
    Ok(cancelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decision_is_read_back_from_its_label() {
        for decision in Decision::ALL {
            assert_eq!(Decision::of(decision.label()), decision);
        }
        assert_eq!(Decision::of("something new"), Decision::Contended);
    }
}
