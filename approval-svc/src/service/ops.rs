//! The gRPC handlers of `lab.approval.v1.OpsService`: consistency checks on demand, control of
//! the circuit breaker towards order-svc, and the audit trail. A check that heals and a
//! breaker change are recorded right after they happen: neither is one transaction of this
//! database (see [`crate::audit`]).

use std::sync::Arc;
use std::time::Duration;

use lab_common::audit::{self, AuditEvent, AuditQuery, OK};
use lab_common::reason::Reason;
use lab_common::validate::Violations;
use lab_proto::approval::v1 as pb;
use lab_proto::approval::v1::ops_service_server::OpsService;
use resilience::{BreakerHandle, BreakerState, EndpointState, EndpointsHandle};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use uuid::Uuid;

use crate::audit::{Action, Asked, CONSISTENCY_CHECK, ORDER_SVC};
use crate::consistency::{CheckOptions, Checker};
use crate::error::ApprovalError;
use crate::service::access;

/// How long RunConsistencyCheck waits for a check already running elsewhere.
const WAIT_FOR_RUNNING_CHECK: Duration = Duration::from_secs(30);

/// The OpsService implementation.
#[derive(Debug, Clone)]
pub struct OpsApi {
    pool: PgPool,
    checker: Arc<Checker>,
    breaker: BreakerHandle,
    endpoints: Option<EndpointsHandle>,
}

impl OpsApi {
    /// Handlers over this instance's database (the audit trail), checker and breaker.
    pub fn new(
        pool: PgPool,
        checker: Arc<Checker>,
        breaker: BreakerHandle,
        endpoints: Option<EndpointsHandle>,
    ) -> Self {
        Self {
            pool,
            checker,
            breaker,
            endpoints,
        }
    }

    fn endpoint_views(&self) -> Vec<pb::OrderEndpoint> {
        let Some(endpoints) = &self.endpoints else {
            return Vec::new();
        };
        let now = std::time::SystemTime::now();
        endpoints
            .endpoints()
            .into_iter()
            .map(|e| pb::OrderEndpoint {
                address: e.address,
                state: match e.state {
                    EndpointState::Admitted => pb::EndpointState::Admitted,
                    EndpointState::Ejected => pb::EndpointState::Ejected,
                    EndpointState::Probing => pb::EndpointState::Probing,
                }
                .into(),
                consecutive_failures: e.consecutive_failures,
                ejections: e.ejections,
                ejected_until: e
                    .ejected_for
                    .map(|left| prost_types::Timestamp::from(now + left)),
                in_flight: u32::try_from(e.in_flight).unwrap_or(u32::MAX),
            })
            .collect()
    }
}

/// Writes `event` on its own: the change it records was not this database's.
async fn record(pool: &PgPool, event: AuditEvent) -> Result<(), Status> {
    audit::record(pool, [event])
        .await
        .map_err(|error| ApprovalError::from(error).into())
}

fn circuit_state(state: BreakerState) -> pb::CircuitState {
    match state {
        BreakerState::Closed => pb::CircuitState::Closed,
        BreakerState::Open => pb::CircuitState::Open,
        BreakerState::HalfOpen => pb::CircuitState::HalfOpen,
        BreakerState::ForcedOpen => pb::CircuitState::ForcedOpen,
    }
}

#[tonic::async_trait]
impl OpsService for OpsApi {
    #[tracing::instrument(skip_all, fields(full = request.get_ref().full, dry_run = request.get_ref().dry_run))]
    async fn run_consistency_check(
        &self,
        request: Request<pb::RunConsistencyCheckRequest>,
    ) -> Result<Response<pb::RunConsistencyCheckResponse>, Status> {
        let options = CheckOptions {
            full: request.get_ref().full,
            dry_run: request.get_ref().dry_run,
        };
        let asked = Asked::new(access::caller(&request, None), Action::RunConsistencyCheck);
        // The heals share the call's request id, so the trail ties them to it.
        let run_id = match asked.caller.request_id.as_str() {
            "" => Uuid::now_v7().to_string(),
            id => id.to_owned(),
        };
        let checked = self
            .checker
            .check(options, WAIT_FOR_RUNNING_CHECK, &run_id)
            .await
            .map_err(|error| Status::from(ApprovalError::from(error)));
        let recorded = if options.dry_run {
            Ok(())
        } else {
            let outcome = match &checked {
                Ok(_) => OK.to_owned(),
                Err(status) => lab_common::status::reason(status)
                    .unwrap_or_else(|| Reason::Internal.as_str().to_owned()),
            };
            record(&self.pool, asked.event(CONSISTENCY_CHECK, outcome)).await
        };
        // A failed check answers with its own status, whatever became of its event.
        let report = checked?;
        recorded?;
        tracing::info!(
            violations = report.violations.len(),
            healed = report.healed(),
            "consistency check done"
        );
        Ok(Response::new(pb::RunConsistencyCheckResponse {
            report: Some((&report).into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_circuit_breaker(
        &self,
        _request: Request<pb::GetCircuitBreakerRequest>,
    ) -> Result<Response<pb::GetCircuitBreakerResponse>, Status> {
        Ok(Response::new(pb::GetCircuitBreakerResponse {
            state: circuit_state(self.breaker.state()).into(),
            endpoints: self.endpoint_views(),
        }))
    }

    #[tracing::instrument(skip_all, fields(state = request.get_ref().state))]
    async fn set_circuit_breaker(
        &self,
        request: Request<pb::SetCircuitBreakerRequest>,
    ) -> Result<Response<pb::SetCircuitBreakerResponse>, Status> {
        let asked = Asked::new(access::caller(&request, None), Action::SetCircuitBreaker);
        match pb::CircuitState::try_from(request.get_ref().state) {
            Ok(pb::CircuitState::ForcedOpen) => self.breaker.force_open(),
            Ok(pb::CircuitState::Closed) => self.breaker.reset(),
            _ => {
                let mut violations = Violations::default();
                violations.add(
                    "state",
                    "must be CIRCUIT_STATE_FORCED_OPEN or CIRCUIT_STATE_CLOSED",
                );
                return Err(ApprovalError::Invalid(violations).into());
            }
        }
        let state = self.breaker.state();
        tracing::warn!(%state, "circuit breaker set by an operator");
        // After the change, so breaker control works even when the database does not; a failed
        // write is reported, and a retry (setting a state is idempotent) records it.
        record(&self.pool, asked.event(ORDER_SVC, OK)).await?;
        Ok(Response::new(pb::SetCircuitBreakerResponse {
            state: circuit_state(state).into(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Violations::default();
        let query = AuditQuery::parse(
            request.page_size,
            &request.page_token,
            &request.actor,
            &request.target_id,
            &mut violations,
        );
        violations.into_result()?;
        let (events, next_page_token) = audit::list(&self.pool, &query)
            .await
            .map_err(ApprovalError::from)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events,
            next_page_token,
        }))
    }
}
