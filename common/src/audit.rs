//! The audit trail both services keep (API.md "Security"): one row per state-changing call in
//! the service's own `audit_events` table, written in the same transaction as the change where
//! there is one, and append-only (triggers refuse UPDATE, DELETE and TRUNCATE to every role,
//! the service's own included; see the migrations).
//!
//! A handler reads its [`Caller`] from the request before taking the body, makes an
//! [`AuditEvent`] per call once the outcome is known, and writes the events with [`record`] (or
//! binds [`AuditColumns`] into a statement of its own, as a batch does). `OpsService/
//! ListAuditEvents` is [`AuditQuery::parse`] then [`list`].
//!
//! Outcomes are `OK`, `REPLAYED` (an idempotency key answered an earlier result) or the
//! refusal's `ErrorInfo.reason`. Calls refused before the service looked at them (no token,
//! missing role, bad input) change nothing and are not recorded: the request log and metrics
//! count them.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use tonic::Request;
use uuid::Uuid;

use crate::auth::principal;
use crate::metadata::{MAX_KEY_LEN, REQUEST_ID};
use crate::paging::PageRequest;
use crate::validate::Violations;

/// The actor of what a service does on its own (the completer rolling an approval forward,
/// the consistency check healing).
pub const SYSTEM_ACTOR: &str = "system";
/// The outcome of a call that did what it asked.
pub const OK: &str = "OK";
/// The outcome of a call an idempotency key answered with an earlier result.
pub const REPLAYED: &str = "REPLAYED";

/// Who made a call, and under which request id: read from the request before its body is
/// taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`; in open mode what the service knows the caller as.
    pub actor: String,
    /// The call's `x-request-id` (the server's request-id layer sets one when the caller did
    /// not).
    pub request_id: String,
}

impl Caller {
    /// The verified principal of `request`; in open mode (no principal) `open_mode_actor()`,
    /// e.g. the `client-id` header or the request's `approver`.
    pub fn of<T>(request: &Request<T>, open_mode_actor: impl FnOnce() -> String) -> Self {
        let actor = principal(request)
            .map(|caller| caller.subject.clone())
            .unwrap_or_else(open_mode_actor);
        let request_id = request
            .metadata()
            .get(REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Self { actor, request_id }
    }

    /// The service itself, for work no call asked for; `request_id` names the run (e.g. the
    /// consistency check's) or is empty.
    pub fn system(request_id: impl Into<String>) -> Self {
        Self {
            actor: SYSTEM_ACTOR.to_owned(),
            request_id: request_id.into(),
        }
    }

    /// The event of this caller's `action` on `target_id` with `outcome`.
    pub fn event(
        &self,
        action: &str,
        target_id: impl ToString,
        outcome: impl Into<String>,
    ) -> AuditEvent {
        AuditEvent {
            event_id: Uuid::now_v7(),
            actor: self.actor.clone(),
            action: action.to_owned(),
            target_id: target_id.to_string(),
            outcome: outcome.into(),
            request_id: self.request_id.clone(),
        }
    }
}

/// One audit row to write (the database stamps `at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// UUID v7, so the trail lists in the order events were made.
    pub event_id: Uuid,
    /// See [`Caller::actor`].
    pub actor: String,
    /// The RPC, e.g. `CreateOrder`.
    pub action: String,
    /// What the call changed (a challenge, order, product or dead-letter id).
    pub target_id: String,
    /// `OK`, `REPLAYED` or a reason.
    pub outcome: String,
    /// See [`Caller::request_id`].
    pub request_id: String,
}

/// Events as one array per column, for `unnest` in a statement that writes many at once.
/// Bind in this order: `event_ids`, `actors`, `actions`, `target_ids`, `outcomes`,
/// `request_ids` (see [`INSERT`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditColumns {
    /// Each event's id.
    pub event_ids: Vec<Uuid>,
    /// Each event's actor.
    pub actors: Vec<String>,
    /// Each event's action.
    pub actions: Vec<String>,
    /// Each event's target.
    pub target_ids: Vec<String>,
    /// Each event's outcome.
    pub outcomes: Vec<String>,
    /// Each event's request id.
    pub request_ids: Vec<String>,
}

impl AuditColumns {
    /// Appends one event.
    pub fn push(&mut self, event: AuditEvent) {
        self.event_ids.push(event.event_id);
        self.actors.push(event.actor);
        self.actions.push(event.action);
        self.target_ids.push(event.target_id);
        self.outcomes.push(event.outcome);
        self.request_ids.push(event.request_id);
    }

    /// Binds the six arrays, in [`INSERT`]'s order, to `query`.
    pub fn bind<'q, O>(
        self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(self.event_ids)
            .bind(self.actors)
            .bind(self.actions)
            .bind(self.target_ids)
            .bind(self.outcomes)
            .bind(self.request_ids)
    }
}

impl FromIterator<AuditEvent> for AuditColumns {
    fn from_iter<I: IntoIterator<Item = AuditEvent>>(events: I) -> Self {
        let mut columns = Self::default();
        for event in events {
            columns.push(event);
        }
        columns
    }
}

/// Writes events bound as [`AuditColumns`] at `$1`…`$6`.
pub static INSERT: LazyLock<String> = LazyLock::new(|| insert_at(1));

/// Writes events bound as [`AuditColumns`] at `$first`…`$first+5`: for a statement that binds
/// its own parameters first and writes its events in a data-modifying `WITH` clause, so that
/// they commit with its change in one round trip.
pub fn insert_at(first: usize) -> String {
    let [ids, actors, actions, targets, outcomes, requests] =
        std::array::from_fn::<usize, 6, _>(|column| first + column);
    format!(
        "INSERT INTO audit_events (event_id, actor, action, target_id, outcome, request_id) \
         SELECT * FROM unnest(${ids}::uuid[], ${actors}::text[], ${actions}::text[], \
         ${targets}::text[], ${outcomes}::text[], ${requests}::text[])"
    )
}

/// Writes `events` with `executor` (a transaction's, to commit them with the change).
pub async fn record<'e, E: PgExecutor<'e>>(
    executor: E,
    events: impl IntoIterator<Item = AuditEvent>,
) -> sqlx::Result<()> {
    let columns: AuditColumns = events.into_iter().collect();
    if columns.event_ids.is_empty() {
        return Ok(());
    }
    columns
        .bind(sqlx::query_as::<_, ()>(INSERT.as_str()))
        .fetch_optional(executor)
        .await?;
    Ok(())
}

/// A validated `ListAuditEvents` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this actor's events.
    pub actor: Option<String>,
    /// Only events on this target.
    pub target_id: Option<String>,
    /// Where the page starts and its size.
    pub page: PageRequest,
}

impl AuditQuery {
    /// Validates the request's fields (empty filters mean "any"), recording violations.
    pub fn parse(
        page_size: i32,
        page_token: &str,
        actor: &str,
        target_id: &str,
        violations: &mut Violations,
    ) -> Self {
        let mut filter = |field: &str, value: &str| {
            if value.len() > MAX_KEY_LEN {
                violations.add(field, format!("must have at most {MAX_KEY_LEN} characters"));
            }
            (!value.is_empty()).then(|| value.to_owned())
        };
        let actor = filter("actor", actor);
        let target_id = filter("target_id", target_id);
        Self {
            actor,
            target_id,
            page: PageRequest::parse(page_size, page_token, violations),
        }
    }
}

/// One recorded event, as listed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRecord {
    /// See [`AuditEvent::event_id`].
    pub event_id: Uuid,
    /// See [`AuditEvent::actor`].
    pub actor: String,
    /// See [`AuditEvent::action`].
    pub action: String,
    /// See [`AuditEvent::target_id`].
    pub target_id: String,
    /// See [`AuditEvent::outcome`].
    pub outcome: String,
    /// See [`AuditEvent::request_id`].
    pub request_id: String,
    /// When the row was written.
    pub at: DateTime<Utc>,
}

impl From<AuditRecord> for lab_proto::audit::v1::AuditEvent {
    fn from(record: AuditRecord) -> Self {
        Self {
            event_id: record.event_id.to_string(),
            actor: record.actor,
            action: record.action,
            target_id: record.target_id,
            outcome: record.outcome,
            request_id: record.request_id,
            at: Some(crate::time::to_proto(record.at)),
        }
    }
}

/// One page of the trail, oldest first, and the next page's token (empty on the last page).
pub async fn list(
    pool: &PgPool,
    query: &AuditQuery,
) -> sqlx::Result<(Vec<lab_proto::audit::v1::AuditEvent>, String)> {
    let rows: Vec<AuditRecord> = sqlx::query_as(
        "SELECT event_id, actor, action, target_id, outcome, request_id, at \
         FROM audit_events \
         WHERE ($1::uuid IS NULL OR event_id > $1) \
           AND ($2::text IS NULL OR actor = $2) \
           AND ($3::text IS NULL OR target_id = $3) \
         ORDER BY event_id \
         LIMIT $4",
    )
    .bind(query.page.after)
    .bind(query.actor.as_deref())
    .bind(query.target_id.as_deref())
    .bind(query.page.fetch_limit())
    .fetch_all(pool)
    .await?;
    let (rows, next_page_token) = query.page.finish(rows, |row| row.event_id);
    Ok((rows.into_iter().map(Into::into).collect(), next_page_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_is_the_token_subject_else_the_open_mode_actor() {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(REQUEST_ID, "req-1".parse().expect("ascii"));
        let open = Caller::of(&request, || "client-7".to_owned());
        assert_eq!(open.actor, "client-7");
        assert_eq!(open.request_id, "req-1");

        request.extensions_mut().insert(crate::auth::Principal {
            subject: "alice".into(),
            roles: vec!["approver".into()],
        });
        let verified = Caller::of(&request, || "client-7".to_owned());
        assert_eq!(verified.actor, "alice");
    }

    #[test]
    fn columns_keep_the_events_in_order() {
        let caller = Caller::system("check-1");
        let columns: AuditColumns = [
            caller.event("Restock", "p1", OK),
            caller.event("CancelOrder", "o1", "ORDER_NOT_FOUND"),
        ]
        .into_iter()
        .collect();
        assert_eq!(columns.actions, ["Restock", "CancelOrder"]);
        assert_eq!(columns.target_ids, ["p1", "o1"]);
        assert_eq!(columns.outcomes, [OK, "ORDER_NOT_FOUND"]);
        assert_eq!(columns.actors, [SYSTEM_ACTOR, SYSTEM_ACTOR]);
        assert!(columns.event_ids[0] < columns.event_ids[1]);
    }

    #[test]
    fn filters_are_optional_and_bounded() {
        let mut violations = Violations::default();
        let query = AuditQuery::parse(0, "", "", "", &mut violations);
        assert!(violations.is_empty());
        assert_eq!((query.actor, query.target_id), (None, None));

        let query = AuditQuery::parse(10, "", "alice", "c1", &mut violations);
        assert!(violations.is_empty());
        assert_eq!(query.actor.as_deref(), Some("alice"));
        assert_eq!(query.target_id.as_deref(), Some("c1"));

        AuditQuery::parse(10, "", &"a".repeat(256), "", &mut violations);
        assert!(violations.into_result().is_err());
    }
}
