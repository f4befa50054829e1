//! Authentication and the roles table on a real approval-svc (and order-svc, both secured):
//! every RPC refuses every bad credential and writes nothing, starts no attempt; the approver
//! is the token's subject; a user acts only for itself; approval-svc presents its token file.

use lab_proto::approval::v1 as apb;
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::approval::v1::ops_service_client::OpsServiceClient;
use lab_proto::order::v1 as opb;
use sqlx::PgPool;
use tonic::transport::Channel;
use tonic::{Code, Request};
use uuid::Uuid;

use crate::helpers::*;
use crate::support::{self, AUDIENCE, Credentials};

/// `message` with `authorization: <header>` when given.
pub(crate) fn with_auth<T>(message: T, header: Option<&str>) -> Request<T> {
    support::with_auth(Request::new(message), header)
}

/// Both services secured by `key`; approval-svc presents a `shop-client` token (sub
/// `approval-svc`) from a file; a product of 10 exists.
pub(crate) struct Secured {
    pub order: OrderSvc,
    pub approval: ApprovalSvc,
    pub approvals_db: PgPool,
    pub product_id: String,
}

impl Secured {
    /// The `client_id` of every order in the shop (read from its database: every RPC needs a
    /// token).
    async fn order_clients(&self) -> Vec<String> {
        let shop = PgPool::connect(&self.order.database_url).await.unwrap();
        sqlx::query_scalar("SELECT client_id FROM orders ORDER BY order_id")
            .fetch_all(&shop)
            .await
            .unwrap()
    }
}

pub(crate) async fn secured(key: &Credentials) -> Secured {
    let mut order_config = order_config(fresh_database().await);
    order_config.auth.auth_keys = Some(key.0.jwks());
    order_config.auth.auth_audience = Some(AUDIENCE.into());
    let order = OrderSvc::start_with(order_config).await;
    let product = order
        .client()
        .await
        .create_product(with_auth(
            opb::CreateProductRequest {
                name: "hoodie".into(),
                initial_stock: 10,
                max_per_customer: 0,
            },
            Some(&key.bearer("admin", &["shop-admin"])),
        ))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    let token_file = key.0.dir().join("order-svc.token");
    let token = key
        .0
        .signer()
        .token(&Credentials::spec("approval-svc", &["shop-client"]))
        .unwrap();
    // Surrounding whitespace (an editor's newline) is ignored.
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let database = fresh_database().await;
    let mut config = ApprovalSvc::config(&database, &order.url());
    config.auth.auth_keys = Some(key.0.jwks());
    config.auth.auth_audience = Some(AUDIENCE.into());
    config.order_svc_token_file = Some(token_file);
    let approval = ApprovalSvc::start(config).await;
    Secured {
        order,
        approval,
        approvals_db: PgPool::connect(&database).await.unwrap(),
        product_id: product.product_id,
    }
}

/// Challenges, attempts made, approvers recorded, challenges by state, dead letters, audit
/// events.
async fn snapshot(pool: &PgPool) -> (i64, i64, i64, Vec<String>, i64, i64) {
    let (count, attempts, approvers, dead, events): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(attempts), 0)::bigint, count(approver),
                count(*) FILTER (WHERE dead_lettered), (SELECT count(*) FROM audit_events)
         FROM challenges",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let states: Vec<String> =
        sqlx::query_scalar("SELECT status FROM challenges ORDER BY challenge_id")
            .fetch_all(pool)
            .await
            .unwrap();
    (count, attempts, approvers, states, dead, events)
}

const RPCS: [&str; 13] = [
    "SubmitChallenge",
    "GetChallenge",
    "ListChallenges",
    "ApproveChallenge",
    "RejectChallenge",
    "RetryApproval",
    "RevokeApproval",
    "ListDeadLetters",
    "RequeueDeadLetter",
    "RunConsistencyCheck",
    "GetCircuitBreaker",
    "SetCircuitBreaker",
    "ListAuditEvents",
];

async fn call(
    channel: Channel,
    rpc: &str,
    header: Option<&str>,
    challenge_id: &str,
    product_id: &str,
) -> Result<(), tonic::Status> {
    let mut approvals = ApprovalServiceClient::new(channel.clone());
    let mut ops = OpsServiceClient::new(channel);
    let id = || challenge_id.to_owned();
    macro_rules! send {
        ($client:ident . $method:ident, $message:expr) => {
            $client.$method(with_auth($message, header)).await.map(drop)
        };
    }
    match rpc {
        "SubmitChallenge" => send!(
            approvals.submit_challenge,
            apb::SubmitChallengeRequest {
                user_id: Uuid::now_v7().to_string(),
                product_id: product_id.into(),
                quantity: 1,
                title: "t".into(),
            }
        ),
        "GetChallenge" => send!(
            approvals.get_challenge,
            apb::GetChallengeRequest { challenge_id: id() }
        ),
        "ListChallenges" => send!(
            approvals.list_challenges,
            apb::ListChallengesRequest::default()
        ),
        "ApproveChallenge" => send!(
            approvals.approve_challenge,
            apb::ApproveChallengeRequest {
                challenge_id: id(),
                approver: "mallory".into()
            }
        ),
        "RejectChallenge" => send!(
            approvals.reject_challenge,
            apb::RejectChallengeRequest {
                challenge_id: id(),
                approver: "mallory".into(),
                reason: String::new()
            }
        ),
        "RetryApproval" => send!(
            approvals.retry_approval,
            apb::RetryApprovalRequest { challenge_id: id() }
        ),
        "RevokeApproval" => send!(
            approvals.revoke_approval,
            apb::RevokeApprovalRequest {
                challenge_id: id(),
                reason: "x".into()
            }
        ),
        "ListDeadLetters" => send!(
            approvals.list_dead_letters,
            apb::ListDeadLettersRequest::default()
        ),
        "RequeueDeadLetter" => send!(
            approvals.requeue_dead_letter,
            apb::RequeueDeadLetterRequest { challenge_id: id() }
        ),
        "RunConsistencyCheck" => send!(
            ops.run_consistency_check,
            apb::RunConsistencyCheckRequest::default()
        ),
        "GetCircuitBreaker" => send!(
            ops.get_circuit_breaker,
            apb::GetCircuitBreakerRequest::default()
        ),
        "SetCircuitBreaker" => send!(
            ops.set_circuit_breaker,
            apb::SetCircuitBreakerRequest {
                state: apb::CircuitState::ForcedOpen as i32
            }
        ),
        "ListAuditEvents" => send!(
            ops.list_audit_events,
            apb::ListAuditEventsRequest::default()
        ),
        other => panic!("no such RPC {other}"),
    }
}

#[tokio::test]
async fn every_rpc_refuses_every_bad_credential_and_writes_nothing() {
    bounded(async {
        let key = Credentials::new();
        let system = secured(&key).await;
        let approver = key.bearer("alice", &["approver"]);
        let mut client = system.approval.client().await;
        let challenge = client
            .submit_challenge(with_auth(
                apb::SubmitChallengeRequest {
                    user_id: Uuid::now_v7().to_string(),
                    product_id: system.product_id.clone(),
                    quantity: 1,
                    title: "ran".into(),
                },
                Some(&approver),
            ))
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap();
        let before = snapshot(&system.approvals_db).await;

        let cases = key.bad(
            &["approver", "operator", "user"],
            &["shop-admin", "shop-client"],
        );
        let channel = Channel::from_shared(format!("http://{}", system.approval.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        for rpc in RPCS {
            for bad in &cases {
                let header = bad.header.as_deref();
                let outcome = call(
                    channel.clone(),
                    rpc,
                    header,
                    &challenge.challenge_id,
                    &system.product_id,
                )
                .await;
                bad.assert_refused(rpc, outcome);
            }
        }
        assert_eq!(
            snapshot(&system.approvals_db).await,
            before,
            "a refused call wrote"
        );
        assert!(
            system.order_clients().await.is_empty(),
            "no order was created"
        );
        let breaker = OpsServiceClient::new(channel)
            .get_circuit_breaker(with_auth(
                apb::GetCircuitBreakerRequest::default(),
                Some(&key.bearer("ops", &["operator"])),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            breaker.state,
            apb::CircuitState::Closed as i32,
            "nobody forced it open"
        );
    })
    .await;
}

#[tokio::test]
async fn the_approver_is_the_token_subject_and_users_act_only_for_themselves() {
    bounded(async {
        let key = Credentials::new();
        let system = secured(&key).await;
        let (me, them) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
        let user = key.bearer(&me, &["user"]);
        let approver = key.bearer("alice", &["approver"]);
        let mut client = system.approval.client().await;
        let submit = |user_id: &str, header: &str| {
            with_auth(
                apb::SubmitChallengeRequest {
                    user_id: user_id.into(),
                    product_id: system.product_id.clone(),
                    quantity: 1,
                    title: "ran".into(),
                },
                Some(header),
            )
        };
        let mine = client
            .submit_challenge(submit(&me, &user))
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap();
        let refused = client
            .submit_challenge(submit(&them, &user))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert_eq!(
            lab_common::status::reason(&refused).as_deref(),
            Some("NOT_OWNER")
        );
        let theirs = client
            .submit_challenge(submit(&them, &approver))
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap();

        let listed = client
            .list_challenges(with_auth(
                apb::ListChallengesRequest::default(),
                Some(&user),
            ))
            .await
            .unwrap()
            .into_inner()
            .challenges;
        assert_eq!(
            listed
                .iter()
                .map(|c| c.challenge_id.as_str())
                .collect::<Vec<_>>(),
            [mine.challenge_id.as_str()]
        );
        let hidden = client
            .get_challenge(with_auth(
                apb::GetChallengeRequest {
                    challenge_id: theirs.challenge_id.clone(),
                },
                Some(&user),
            ))
            .await
            .unwrap_err();
        assert_eq!(hidden.code(), Code::NotFound);
        let all = client
            .list_challenges(with_auth(
                apb::ListChallengesRequest::default(),
                Some(&approver),
            ))
            .await
            .unwrap()
            .into_inner()
            .challenges;
        assert_eq!(all.len(), 2);

        // A user cannot approve even its own challenge.
        let own_approval = client
            .approve_challenge(with_auth(
                apb::ApproveChallengeRequest {
                    challenge_id: mine.challenge_id.clone(),
                    approver: me.clone(),
                },
                Some(&user),
            ))
            .await
            .unwrap_err();
        assert_eq!(own_approval.code(), Code::PermissionDenied);

        // The approver recorded is alice, whatever the field says; the order is created through
        // approval-svc's own token.
        let approved = client
            .approve_challenge(with_auth(
                apb::ApproveChallengeRequest {
                    challenge_id: mine.challenge_id.clone(),
                    approver: "mallory".into(),
                },
                Some(&approver),
            ))
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap();
        assert_eq!(
            status(&approved),
            apb::ChallengeStatus::Approved,
            "{approved:?}"
        );
        assert_eq!(approved.approver, "alice");
        assert_eq!(system.order_clients().await, ["approval-svc"]);
        let rejected = client
            .reject_challenge(with_auth(
                apb::RejectChallengeRequest {
                    challenge_id: theirs.challenge_id.clone(),
                    approver: "mallory".into(),
                    reason: "no".into(),
                },
                Some(&approver),
            ))
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap();
        assert_eq!(rejected.approver, "alice");
    })
    .await;
}
