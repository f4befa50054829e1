-- At most one order per (client_id, idempotency_key), ever, not only while the key's claim in
-- idempotency_keys lives (issue 9). The reaper deletes claims after the retention, and a retry
-- that came later (a dead letter requeued days after) used to find no claim and create a second
-- order. place_order now asks the orders themselves after a fresh claim; this constraint is the
-- backstop for any writer that skips the function.

-- Databases that already hold a pair twice (created by that bug) cannot take the constraint; say
-- so plainly instead of failing on an anonymous index build.
DO $$
DECLARE
    v_pairs bigint;
BEGIN
    SELECT count(*) INTO v_pairs
    FROM (SELECT 1 FROM orders GROUP BY client_id, idempotency_key HAVING count(*) > 1) AS twice;
    IF v_pairs > 0 THEN
        RAISE EXCEPTION '% (client_id, idempotency_key) pairs are held by more than one order', v_pairs
            USING HINT = 'Orders created twice after their key expired (issue 9): decide which '
                'order stands, cancel the other through CancelOrder and give it a distinct key '
                '(docs/decisions.md, "Issue 9: one order per key, past retention").';
    END IF;
END
$$;

-- The unique index also serves every lookup by key, so the plain index goes.
DROP INDEX orders_by_key;
ALTER TABLE orders
    ADD CONSTRAINT orders_one_per_key UNIQUE (client_id, idempotency_key);

-- Same signature and outcomes as before. New: after a fresh claim (no claim row existed, e.g. it
-- was reaped), an order already holding (client, key) decides. The same request re-points the
-- claim at that order and replays it; a different request deletes the claim again (nothing
-- written) and answers 'reused'. This read comes before the stock UPDATE, so it does not lengthen
-- the hot product's row lock. It cannot miss a concurrent creator: an order is only inserted by a
-- transaction holding the claim, and a fresh claim means no one else holds it now. Anything that
-- slips past (a writer outside this function) meets orders_one_per_key: 23505, which the service
-- answers as the retryable ABORTED IDEMPOTENCY_KEY_IN_USE; the retry then replays.
CREATE OR REPLACE FUNCTION place_order(
    p_client_id text,
    p_key text,
    p_fingerprint bytea,
    p_order_id uuid,
    p_product_id uuid,
    p_quantity integer,
    p_customer_id uuid,
    p_retention_seconds double precision
) RETURNS TABLE (
    outcome text,
    order_id uuid,
    product_id uuid,
    quantity integer,
    customer_id uuid,
    status text,
    client_id text,
    idempotency_key text,
    cancel_reason text,
    created_at timestamptz,
    updated_at timestamptz,
    cancelled_at timestamptz
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_fingerprint bytea;
    v_order_id uuid;
    v_held orders%ROWTYPE;
    v_stock bigint;
BEGIN
    -- A concurrent holder of the same key makes this wait until it commits or rolls back.
    INSERT INTO idempotency_keys (client_id, idempotency_key, request_fingerprint, order_id, expires_at)
    VALUES (p_client_id, p_key, p_fingerprint, p_order_id,
            now() + p_retention_seconds * interval '1 second')
    ON CONFLICT (client_id, idempotency_key) DO NOTHING;

    IF NOT FOUND THEN
        -- Each statement takes a fresh snapshot: the conflicting claim is visible now.
        SELECT k.request_fingerprint, k.order_id INTO v_fingerprint, v_order_id
        FROM idempotency_keys k
        WHERE k.client_id = p_client_id AND k.idempotency_key = p_key;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'contended', NULL::uuid, NULL::uuid, NULL::integer, NULL::uuid,
                NULL::text, NULL::text, NULL::text, NULL::text, NULL::timestamptz,
                NULL::timestamptz, NULL::timestamptz;
            RETURN;
        END IF;
        IF v_fingerprint <> p_fingerprint THEN
            RETURN QUERY SELECT 'reused', NULL::uuid, NULL::uuid, NULL::integer, NULL::uuid,
                NULL::text, NULL::text, NULL::text, NULL::text, NULL::timestamptz,
                NULL::timestamptz, NULL::timestamptz;
            RETURN;
        END IF;
        RETURN QUERY SELECT 'replayed', o.order_id, o.product_id, o.quantity, o.customer_id,
            o.status, o.client_id, o.idempotency_key, o.cancel_reason, o.created_at,
            o.updated_at, o.cancelled_at
        FROM orders o WHERE o.order_id = v_order_id;
        RETURN;
    END IF;

    -- A fresh claim, but the key may have been used before its claim was reaped.
    SELECT * INTO v_held FROM orders o
    WHERE o.client_id = p_client_id AND o.idempotency_key = p_key;
    IF FOUND THEN
        IF (v_held.product_id, v_held.quantity, v_held.customer_id)
            IS DISTINCT FROM (p_product_id, p_quantity, p_customer_id) THEN
            DELETE FROM idempotency_keys k
            WHERE k.client_id = p_client_id AND k.idempotency_key = p_key;
            RETURN QUERY SELECT 'reused', NULL::uuid, NULL::uuid, NULL::integer, NULL::uuid,
                NULL::text, NULL::text, NULL::text, NULL::text, NULL::timestamptz,
                NULL::timestamptz, NULL::timestamptz;
            RETURN;
        END IF;
        UPDATE idempotency_keys k SET order_id = v_held.order_id
        WHERE k.client_id = p_client_id AND k.idempotency_key = p_key;
        RETURN QUERY SELECT 'replayed', v_held.order_id, v_held.product_id, v_held.quantity,
            v_held.customer_id, v_held.status, v_held.client_id, v_held.idempotency_key,
            v_held.cancel_reason, v_held.created_at, v_held.updated_at, v_held.cancelled_at;
        RETURN;
    END IF;

    UPDATE products p SET stock = p.stock - p_quantity, updated_at = now()
    WHERE p.product_id = p_product_id AND p.stock >= p_quantity;
    IF NOT FOUND THEN
        SELECT p.stock INTO v_stock FROM products p WHERE p.product_id = p_product_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'product not found' USING ERRCODE = 'LB404';
        END IF;
        RAISE EXCEPTION 'out of stock' USING ERRCODE = 'LB409', DETAIL = v_stock::text;
    END IF;

    RETURN QUERY
    INSERT INTO orders AS o
        (order_id, product_id, quantity, customer_id, status, client_id, idempotency_key)
    VALUES (p_order_id, p_product_id, p_quantity, p_customer_id, 'CREATED', p_client_id, p_key)
    RETURNING 'created'::text, o.order_id, o.product_id, o.quantity, o.customer_id, o.status,
        o.client_id, o.idempotency_key, o.cancel_reason, o.created_at, o.updated_at,
        o.cancelled_at;
END
$$;
