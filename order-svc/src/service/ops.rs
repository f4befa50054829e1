//! The gRPC handler of `lab.order.v1.OpsService`: order-svc's audit trail, for operators.

use lab_common::audit;
use lab_proto::order::v1 as pb;
use lab_proto::order::v1::ops_service_server::OpsService;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::error::OrderError;
use crate::service::parse;

/// The OpsService implementation.
#[derive(Debug, Clone)]
pub struct OpsApi {
    pool: PgPool,
}

impl OpsApi {
    /// Lists the audit trail in the database of `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[tonic::async_trait]
impl OpsService for OpsApi {
    #[tracing::instrument(skip_all)]
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let query = parse::audit_query(request.get_ref())?;
        let (events, next_page_token) = audit::list(&self.pool, &query)
            .await
            .map_err(OrderError::from)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events,
            next_page_token,
        }))
    }
}
