-- CreateOrder in one round trip. The stock row of a hot product is locked from its UPDATE to the
-- commit; done statement by statement from the service, that window includes network round trips
-- and the scheduling of the service's task, which under load dominate. As one function call in
-- one implicit transaction, the lock is held only while the server executes the last two
-- statements and commits.
--
-- Outcomes: 'created' or 'replayed' with the order's columns; 'reused' (same key, different
-- request) and 'contended' (the claim vanished, retry) with NULL columns. Refusals raise, which
-- rolls the key claim back so they do not consume the key:
--   LB404 product not found; LB409 out of stock (DETAIL = the stock available).
CREATE FUNCTION place_order(
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
