"""A Python client of both services, generated with grpcio-tools from proto/ (see ./run).

Runs three checks through the public API and prints `N passed, N failed`:

1. concurrent clicks: ten simultaneous ApproveChallenge calls on one challenge -> one order;
2. stock contention: 30 challenges for a product with 5 in stock -> 5 approved, 25 OUT_OF_STOCK;
3. idempotency replay: CreateOrder twice with one `idempotency-key` -> the same order, the second
   answer carrying `idempotent-replayed: true`; a changed request under that key is refused.

Usage: python client.py ORDER_ADDR APPROVAL_ADDR (with the generated code on PYTHONPATH).
"""

import sys
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc

from lab.approval.v1 import approval_pb2 as approval
from lab.approval.v1 import approval_pb2_grpc as approval_grpc
from lab.order.v1 import order_pb2 as order
from lab.order.v1 import order_pb2_grpc as order_grpc

TIMEOUT = 10.0


def create_product(shop, name, stock):
    return shop.CreateProduct(
        order.CreateProductRequest(name=name, initial_stock=stock), timeout=TIMEOUT
    ).product


def submit(approvals, product_id, quantity=1):
    return approvals.SubmitChallenge(
        approval.SubmitChallengeRequest(
            user_id=str(uuid.uuid4()),
            product_id=product_id,
            quantity=quantity,
            title="python client",
        ),
        timeout=TIMEOUT,
    ).challenge


def approve(approvals, challenge_id, approver):
    return approvals.ApproveChallenge(
        approval.ApproveChallengeRequest(challenge_id=challenge_id, approver=approver),
        timeout=TIMEOUT,
    ).challenge


def orders_of(shop, product_id):
    return shop.ListOrders(
        order.ListOrdersRequest(product_id=product_id, page_size=500), timeout=TIMEOUT
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
            approval.GetChallengeRequest(challenge_id=challenge.challenge_id), timeout=TIMEOUT
        ).challenge
        if final.status == approval.CHALLENGE_STATUS_APPROVED:
            break
        time.sleep(0.1)
    assert final.status == approval.CHALLENGE_STATUS_APPROVED, status_name(final)
    orders = orders_of(shop, product.product_id)
    assert len(orders) == 1, f"{len(orders)} orders for one challenge"
    assert orders[0].order_id == final.order_id
    assert orders[0].idempotency_key == final.idempotency_key
    stock = shop.GetProduct(
        order.GetProductRequest(product_id=product.product_id), timeout=TIMEOUT
    ).product.stock
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
    after = shop.GetProduct(
        order.GetProductRequest(product_id=product.product_id), timeout=TIMEOUT
    ).product
    assert after.stock == 0, after.stock
    assert len(orders_of(shop, product.product_id)) == 5


def idempotency_replay(shop, _approvals):
    product = create_product(shop, "python replay", 10)
    customer = str(uuid.uuid4())
    key = f"python-{uuid.uuid4()}"
    request = order.CreateOrderRequest(product_id=product.product_id, quantity=3, customer_id=customer)
    metadata = (("idempotency-key", key),)
    first, first_call = shop.CreateOrder.with_call(request, metadata=metadata, timeout=TIMEOUT)
    second, second_call = shop.CreateOrder.with_call(request, metadata=metadata, timeout=TIMEOUT)
    first_meta = dict(first_call.initial_metadata())
    second_meta = dict(second_call.initial_metadata())
    assert "idempotent-replayed" not in first_meta, first_meta
    assert second_meta.get("idempotent-replayed") == "true", second_meta
    assert first.order == second.order
    assert first.order.idempotency_key == key
    stock = shop.GetProduct(
        order.GetProductRequest(product_id=product.product_id), timeout=TIMEOUT
    ).product.stock
    assert stock == 7, f"stock {stock}: the replay took stock again"

    changed = order.CreateOrderRequest(product_id=product.product_id, quantity=4, customer_id=customer)
    try:
        shop.CreateOrder(changed, metadata=metadata, timeout=TIMEOUT)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.code()
    else:
        raise AssertionError("a changed request under a used key was accepted")

    try:
        shop.CreateOrder(request, timeout=TIMEOUT)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.code()
    else:
        raise AssertionError("CreateOrder without an idempotency-key was accepted")


def main():
    order_addr, approval_addr = sys.argv[1], sys.argv[2]
    shop = order_grpc.OrderServiceStub(grpc.insecure_channel(order_addr))
    approvals = approval_grpc.ApprovalServiceStub(grpc.insecure_channel(approval_addr))
    passed = failed = 0
    for check in (concurrent_clicks, stock_contention, idempotency_replay):
        try:
            check(shop, approvals)
        except Exception:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            print(f"FAIL {check.__name__}")
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {check.__name__}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
