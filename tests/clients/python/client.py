"""A Python client of both services, generated with grpcio-tools from proto/ (see ./run).

Authentication is on: every call sends `authorization: Bearer <token>` in its metadata, with the
token of the role it needs (shop-admin for products, shop-client for orders, approver for
challenges). Runs these checks through the public API and prints `N passed, N failed`:

1. concurrent clicks: ten simultaneous ApproveChallenge calls on one challenge -> one order;
2. stock contention: 30 challenges for a product with 5 in stock -> 5 approved, 25 OUT_OF_STOCK;
3. idempotency replay: CreateOrder twice with one `idempotency-key` -> the same order, the second
   answer carrying `idempotent-replayed: true`; a changed request under that key is refused;
4. refusals: no token -> UNAUTHENTICATED with ErrorInfo reason TOKEN_MISSING, a wrong role ->
   PERMISSION_DENIED with ROLE_REQUIRED, and nothing written;
5. the approver recorded is the token's subject (the request's `approver` field is ignored);
6. the audit trails: an operator lists the approval's events in approval-svc and its order's in
   order-svc, each with its actor, action, outcome and request id;
7. health and reflection answer without a token.

Usage: python client.py ORDER_ADDR APPROVAL_ADDR, with the generated code on PYTHONPATH and the
tokens in ADMIN_TOKEN (shop-admin), SHOP_TOKEN (shop-client), APPROVER_TOKEN (approver, sub
APPROVER_SUB) and OPERATOR_TOKEN (operator).
"""

import os

import sys
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

from lab.approval.v1 import approval_pb2 as approval
from lab.approval.v1 import approval_pb2_grpc as approval_grpc
from lab.approval.v1 import ops_pb2 as approval_ops
from lab.approval.v1 import ops_pb2_grpc as approval_ops_grpc
from lab.order.v1 import order_pb2 as order
from lab.order.v1 import order_pb2_grpc as order_grpc
from lab.order.v1 import ops_pb2 as order_ops
from lab.order.v1 import ops_pb2_grpc as order_ops_grpc

TIMEOUT = 10.0


def bearer(variable):
    """The call metadata carrying the token in the environment variable `variable`."""
    return (("authorization", f"Bearer {os.environ[variable]}"),)


# One token per role, as a deployment hands them out (read once the environment is known).
ADMIN = SHOP = APPROVER = OPERATOR = ()


def create_product(shop, name, stock):
    return shop.CreateProduct(
        order.CreateProductRequest(name=name, initial_stock=stock), metadata=ADMIN, timeout=TIMEOUT
    ).product


def get_product(shop, product_id):
    return shop.GetProduct(
        order.GetProductRequest(product_id=product_id), metadata=ADMIN, timeout=TIMEOUT
    ).product


def submit(approvals, product_id, quantity=1):
    return approvals.SubmitChallenge(
        approval.SubmitChallengeRequest(
            user_id=str(uuid.uuid4()),
            product_id=product_id,
            quantity=quantity,
            title="python client",
        ),
        metadata=APPROVER,
        timeout=TIMEOUT,
    ).challenge


def approve(approvals, challenge_id, approver):
    return approvals.ApproveChallenge(
        approval.ApproveChallengeRequest(challenge_id=challenge_id, approver=approver),
        metadata=APPROVER,
        timeout=TIMEOUT,
    ).challenge


def orders_of(shop, product_id):
    return shop.ListOrders(
        order.ListOrdersRequest(product_id=product_id, page_size=500),
        metadata=ADMIN,
        timeout=TIMEOUT,
    ).orders


def status_name(challenge):
    return approval.ChallengeStatus.Name(challenge.status)


def concurrent_clicks(shop, approvals):
    product = create_product(shop, "python reward", 100)
    challenge = submit(approvals, product.product_id, quantity=2)
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(
            pool.map(
                lambda n: approve(approvals, challenge.challenge_id, f"admin-{n}"), range(10)
            )
        )
    statuses = {status_name(answer) for answer in answers}
    assert statuses <= {"CHALLENGE_STATUS_APPROVED", "CHALLENGE_STATUS_APPROVING"}, statuses
    final = None
    for _ in range(100):
        final = approvals.GetChallenge(
            approval.GetChallengeRequest(challenge_id=challenge.challenge_id),
            metadata=APPROVER,
            timeout=TIMEOUT,
        ).challenge
        if final.status == approval.CHALLENGE_STATUS_APPROVED:
            break
        time.sleep(0.1)
    assert final.status == approval.CHALLENGE_STATUS_APPROVED, status_name(final)
    orders = orders_of(shop, product.product_id)
    assert len(orders) == 1, f"{len(orders)} orders for one challenge"
    assert orders[0].order_id == final.order_id
    assert orders[0].idempotency_key == final.idempotency_key
    stock = get_product(shop, product.product_id).stock
    assert stock == 98, stock


def stock_contention(shop, approvals):
    product = create_product(shop, "python hot item", 5)
    challenges = [submit(approvals, product.product_id) for _ in range(30)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda c: approve(approvals, c.challenge_id, "admin"), challenges))
    approved = [a for a in answers if a.status == approval.CHALLENGE_STATUS_APPROVED]
    out_of_stock = [
        a
        for a in answers
        if a.status == approval.CHALLENGE_STATUS_APPROVE_FAILED
        and a.failure_reason == approval.APPROVAL_FAILURE_REASON_OUT_OF_STOCK
    ]
    assert len(approved) == 5, f"{len(approved)} approved"
    assert len(out_of_stock) == 25, f"{len(out_of_stock)} out of stock"
    assert all(not a.dead_lettered and not a.HasField("next_attempt_at") for a in out_of_stock)
    after = get_product(shop, product.product_id)
    assert after.stock == 0, after.stock
    assert len(orders_of(shop, product.product_id)) == 5


def idempotency_replay(shop, _approvals):
    product = create_product(shop, "python replay", 10)
    customer = str(uuid.uuid4())
    key = f"python-{uuid.uuid4()}"
    request = order.CreateOrderRequest(product_id=product.product_id, quantity=3, customer_id=customer)
    metadata = (("idempotency-key", key),) + SHOP
    first, first_call = shop.CreateOrder.with_call(request, metadata=metadata, timeout=TIMEOUT)
    second, second_call = shop.CreateOrder.with_call(request, metadata=metadata, timeout=TIMEOUT)
    first_meta = dict(first_call.initial_metadata())
    second_meta = dict(second_call.initial_metadata())
    assert "idempotent-replayed" not in first_meta, first_meta
    assert second_meta.get("idempotent-replayed") == "true", second_meta
    assert first.order == second.order
    assert first.order.idempotency_key == key
    stock = get_product(shop, product.product_id).stock
    assert stock == 7, f"stock {stock}: the replay took stock again"

    changed = order.CreateOrderRequest(product_id=product.product_id, quantity=4, customer_id=customer)
    try:
        shop.CreateOrder(changed, metadata=metadata, timeout=TIMEOUT)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.code()
    else:
        raise AssertionError("a changed request under a used key was accepted")

    try:
        shop.CreateOrder(request, metadata=SHOP, timeout=TIMEOUT)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.code()
    else:
        raise AssertionError("CreateOrder without an idempotency-key was accepted")


def refusal(call):
    """The code and ErrorInfo reason `call` is refused with."""
    try:
        call()
    except grpc.RpcError as error:
        status = rpc_status.from_call(error)
        reasons = []
        for detail in status.details if status else ():
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reasons.append(info.reason)
        return error.code(), reasons
    raise AssertionError("the call was accepted")


def refusals(shop, approvals):
    name = f"python refused {uuid.uuid4()}"
    no_token = refusal(
        lambda: shop.CreateProduct(
            order.CreateProductRequest(name=name, initial_stock=1), timeout=TIMEOUT
        )
    )
    assert no_token == (grpc.StatusCode.UNAUTHENTICATED, ["TOKEN_MISSING"]), no_token
    malformed = refusal(
        lambda: approvals.ListChallenges(
            approval.ListChallengesRequest(),
            metadata=(("authorization", "Bearer not.a.jwt"),),
            timeout=TIMEOUT,
        )
    )
    assert malformed == (grpc.StatusCode.UNAUTHENTICATED, ["TOKEN_MALFORMED"]), malformed
    wrong_role = refusal(
        lambda: shop.CreateProduct(
            order.CreateProductRequest(name=name, initial_stock=1), metadata=SHOP, timeout=TIMEOUT
        )
    )
    assert wrong_role == (grpc.StatusCode.PERMISSION_DENIED, ["ROLE_REQUIRED"]), wrong_role
    products = shop.ListProducts(
        order.ListProductsRequest(page_size=500), metadata=ADMIN, timeout=TIMEOUT
    ).products
    assert name not in [p.name for p in products], "a refused call wrote a product"


def approver_is_the_token(shop, approvals):
    product = create_product(shop, "python approver", 1)
    challenge = submit(approvals, product.product_id)
    approved = approve(approvals, challenge.challenge_id, "whoever the request says")
    assert approved.status == approval.CHALLENGE_STATUS_APPROVED, status_name(approved)
    assert approved.approver == os.environ["APPROVER_SUB"], approved.approver


def audit_trails(order_addr, approval_addr):
    shop = order_grpc.OrderServiceStub(grpc.insecure_channel(order_addr))
    approvals = approval_grpc.ApprovalServiceStub(grpc.insecure_channel(approval_addr))
    product = create_product(shop, "python audit", 1)
    challenge = submit(approvals, product.product_id)
    request_id = f"python-{uuid.uuid4()}"
    approved = approvals.ApproveChallenge(
        approval.ApproveChallengeRequest(challenge_id=challenge.challenge_id, approver="x"),
        metadata=APPROVER + (("x-request-id", request_id),),
        timeout=TIMEOUT,
    ).challenge
    assert approved.status == approval.CHALLENGE_STATUS_APPROVED, status_name(approved)

    approval_trail = approval_ops_grpc.OpsServiceStub(grpc.insecure_channel(approval_addr))
    events = approval_trail.ListAuditEvents(
        approval_ops.ListAuditEventsRequest(target_id=challenge.challenge_id),
        metadata=OPERATOR,
        timeout=TIMEOUT,
    ).events
    seen = [(e.action, e.actor, e.outcome) for e in events]
    assert seen == [
        ("SubmitChallenge", os.environ["APPROVER_SUB"], "OK"),
        ("ApproveChallenge", os.environ["APPROVER_SUB"], "OK"),
    ], seen
    assert events[1].request_id == request_id, events[1].request_id
    assert events[0].at.seconds <= events[1].at.seconds

    order_trail = order_ops_grpc.OpsServiceStub(grpc.insecure_channel(order_addr))
    events = order_trail.ListAuditEvents(
        order_ops.ListAuditEventsRequest(target_id=approved.order_id),
        metadata=OPERATOR,
        timeout=TIMEOUT,
    ).events
    assert [(e.action, e.outcome) for e in events] == [("CreateOrder", "OK")], events

    denied = refusal(
        lambda: order_trail.ListAuditEvents(
            order_ops.ListAuditEventsRequest(), metadata=APPROVER, timeout=TIMEOUT
        )
    )
    assert denied == (grpc.StatusCode.PERMISSION_DENIED, ["ROLE_REQUIRED"]), denied


def open_without_token(order_addr, approval_addr):
    for addr, service in (
        (order_addr, "lab.order.v1.OrderService"),
        (approval_addr, "lab.approval.v1.ApprovalService"),
    ):
        with grpc.insecure_channel(addr) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=TIMEOUT
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING, health
            services = list(ProtoReflectionDescriptorDatabase(channel).get_services())
            assert service in services, services


def main():
    global ADMIN, SHOP, APPROVER, OPERATOR  # set once, before any check runs
    ADMIN, SHOP, APPROVER = bearer("ADMIN_TOKEN"), bearer("SHOP_TOKEN"), bearer("APPROVER_TOKEN")
    OPERATOR = bearer("OPERATOR_TOKEN")
    order_addr, approval_addr = sys.argv[1], sys.argv[2]
    shop = order_grpc.OrderServiceStub(grpc.insecure_channel(order_addr))
    approvals = approval_grpc.ApprovalServiceStub(grpc.insecure_channel(approval_addr))
    passed = failed = 0
    on_services = (
        concurrent_clicks,
        stock_contention,
        idempotency_replay,
        refusals,
        approver_is_the_token,
    )
    checks = [(check.__name__, partial(check, shop, approvals)) for check in on_services]
    checks.append(("audit_trails", partial(audit_trails, order_addr, approval_addr)))
    checks.append(("open_without_token", partial(open_without_token, order_addr, approval_addr)))
    for name, check in checks:
        try:
            check()
        except Exception:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
