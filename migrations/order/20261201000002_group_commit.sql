-- Issue 11: group commit on the hot row, per-customer limits.
--
-- A hot product is one row and one lock; with durable commits every order used to hold that lock
-- across its own WAL flush. place_orders takes a whole batch of CreateOrders for one product
-- (formed in the service from the requests that arrived while the previous batch was in the
-- database) and settles them in one transaction: one lock of the row, one flush.

-- 0 = unlimited. CREATED orders of one customer for the product never hold more units.
ALTER TABLE products
    ADD COLUMN max_per_customer integer NOT NULL DEFAULT 0 CHECK (max_per_customer >= 0);

-- CreateOrder for a batch of requests for product p_product_id, in one round trip and one
-- transaction. The arrays hold one element per request, in arrival order (slot 1 first).
--
-- Each request gets its own row (slot = its position) and outcome, exactly as place_order would
-- have answered it alone, one after the other in slot order:
--   created, replayed   the order's columns are set;
--   reused              same key, different request (nothing written);
--   contended           the key's claim vanished or an order holding the key appeared without
--                       one; retry (nothing written);
--   product_not_found, out_of_stock (available = the stock left at its turn),
--   customer_limit (customer_limit, customer_held)
--                       refusals: nothing written, the key's claim does not survive.
-- stock_after is the product's stock when the batch commits (NULL: no such product).
--
-- Nothing here raises for one request's sake, so one bad request never fails the others.
--
-- Locks, always in this order (as place_order, so the two never deadlock each other):
-- (1) the batch's key claims, inserted sorted by (client_id, key), so two batches sharing keys
--     wait on each other instead of deadlocking; a key claimed by an uncommitted transaction
--     makes this wait until it settles, which keeps "one order per key" under concurrency;
-- (2) the product row, once (FOR UPDATE); stock and customer holdings are read after it, hence
--     include every batch committed before, and nothing else can change them until commit.
-- Stock is taken greedily in slot order, so a request is never refused while the stock left at
-- its turn covers it (stock 5, requests 3, 3, 2: created, out_of_stock, created).
CREATE FUNCTION place_orders(
    p_product_id uuid,
    p_client_ids text[],
    p_keys text[],
    p_fingerprints bytea[],
    p_order_ids uuid[],
    p_quantities integer[],
    p_customer_ids uuid[],
    p_retention_seconds double precision
) RETURNS TABLE (
    slot integer,
    outcome text,
    stock_after bigint,
    available bigint,
    customer_limit integer,
    customer_held bigint,
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
    v_n integer := coalesce(cardinality(p_keys), 0);
    -- Per slot, from one read after the claims: the first slot of the same key and of the same
    -- customer (per-key and per-customer state lives at that index), the claim as it stands, and
    -- the committed order already holding the key (issue 9: a claim reaped, the order kept).
    v_first_key integer[];
    v_first_customer integer[];
    v_claim_order uuid[];
    v_claim_fingerprint bytea[];
    v_ours boolean[];
    v_held_order uuid[];
    v_held_same boolean[];
    -- Decisions, per slot.
    v_outcome text[] := array_fill(NULL::text, ARRAY[v_n]);
    v_result_order uuid[] := array_fill(NULL::uuid, ARRAY[v_n]);
    v_available bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_limit_held bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    -- Per key (at its first slot): which slot created its order, or which slot replays the
    -- order that held it before.
    v_creator integer[] := array_fill(NULL::integer, ARRAY[v_n]);
    v_held_replayer integer[] := array_fill(NULL::integer, ARRAY[v_n]);
    -- Per customer (at its first slot): units its CREATED orders hold, this batch's included.
    v_customer_units bigint[];
    v_stock bigint;
    v_stock_start bigint;
    v_limit integer;
    v_taken bigint := 0;
    v_created_slots integer[] := '{}';
    v_inserted uuid[];
    v_k integer;
    v_c integer;
BEGIN
    IF v_n = 0 THEN
        RETURN;
    END IF;
    IF cardinality(p_client_ids) <> v_n OR cardinality(p_fingerprints) <> v_n
        OR cardinality(p_order_ids) <> v_n OR cardinality(p_quantities) <> v_n
        OR cardinality(p_customer_ids) <> v_n THEN
        RAISE EXCEPTION 'place_orders: arrays of different lengths';
    END IF;

    -- (1) Claim the keys. Within the batch the lowest slot of a key takes its claim (the sort
    -- puts it first); the others find it as ours.
    INSERT INTO idempotency_keys (client_id, idempotency_key, request_fingerprint, order_id, expires_at)
    SELECT r.client_id, r.key, r.fingerprint, r.order_id,
           now() + p_retention_seconds * interval '1 second'
    FROM unnest(p_client_ids, p_keys, p_fingerprints, p_order_ids)
         WITH ORDINALITY AS r(client_id, key, fingerprint, order_id, slot)
    ORDER BY r.client_id, r.key, r.slot
    ON CONFLICT (client_id, idempotency_key) DO NOTHING;

    -- A fresh snapshot: claims committed by others while we waited are visible now.
    WITH r AS (
        SELECT s.slot::integer AS slot, s.client_id, s.key,
               (min(s.slot) OVER (PARTITION BY s.client_id, s.key))::integer AS first_key,
               (min(s.slot) OVER (PARTITION BY s.customer_id))::integer AS first_customer
        FROM unnest(p_client_ids, p_keys, p_customer_ids)
             WITH ORDINALITY AS s(client_id, key, customer_id, slot)
    )
    SELECT array_agg(r.first_key ORDER BY r.slot),
           array_agg(r.first_customer ORDER BY r.slot),
           array_agg(kc.order_id ORDER BY r.slot),
           array_agg(kc.request_fingerprint ORDER BY r.slot),
           array_agg(kc.order_id IS NOT DISTINCT FROM p_order_ids[r.first_key] ORDER BY r.slot),
           array_agg(h.order_id ORDER BY r.slot),
           array_agg((h.product_id, h.quantity, h.customer_id)
                     IS NOT DISTINCT FROM (p_product_id, p_quantities[r.slot], p_customer_ids[r.slot])
                     ORDER BY r.slot)
    INTO v_first_key, v_first_customer, v_claim_order, v_claim_fingerprint, v_ours,
         v_held_order, v_held_same
    FROM r
    LEFT JOIN idempotency_keys kc
        ON kc.client_id = r.client_id AND kc.idempotency_key = r.key
    LEFT JOIN orders h
        ON h.client_id = r.client_id AND h.idempotency_key = r.key;

    -- (2) The product row, once.
    SELECT p.stock, p.max_per_customer INTO v_stock, v_limit
    FROM products p WHERE p.product_id = p_product_id
    FOR UPDATE;
    v_stock_start := v_stock;

    IF v_limit > 0 THEN
        SELECT array_agg(coalesce(t.units, 0) ORDER BY s.slot) INTO v_customer_units
        FROM unnest(p_customer_ids) WITH ORDINALITY AS s(customer_id, slot)
        LEFT JOIN LATERAL (
            SELECT sum(o.quantity)::bigint AS units FROM orders o
            WHERE o.customer_id = s.customer_id AND o.product_id = p_product_id
              AND o.status = 'CREATED'
        ) t ON true;
    END IF;

    -- (3) Decide, in arrival order.
    FOR v_i IN 1..v_n LOOP
        v_k := v_first_key[v_i];
        v_c := v_first_customer[v_i];
        IF NOT v_ours[v_i] THEN
            -- Another transaction's committed claim decides, as in place_order.
            IF v_claim_order[v_i] IS NULL THEN
                v_outcome[v_i] := 'contended';
            ELSIF v_claim_fingerprint[v_i] <> p_fingerprints[v_i] THEN
                v_outcome[v_i] := 'reused';
            ELSE
                v_outcome[v_i] := 'replayed';
                v_result_order[v_i] := v_claim_order[v_i];
            END IF;
        ELSIF v_held_order[v_i] IS NOT NULL THEN
            -- Our claim is fresh, but an order has held the key since before it was reaped.
            IF v_held_same[v_i] THEN
                v_outcome[v_i] := 'replayed';
                v_result_order[v_i] := v_held_order[v_i];
                v_held_replayer[v_k] := coalesce(v_held_replayer[v_k], v_i);
            ELSE
                v_outcome[v_i] := 'reused';
            END IF;
        ELSIF v_creator[v_k] IS NOT NULL THEN
            -- An earlier request of this batch created the key's order.
            IF p_fingerprints[v_creator[v_k]] = p_fingerprints[v_i] THEN
                v_outcome[v_i] := 'replayed';
                v_result_order[v_i] := p_order_ids[v_creator[v_k]];
            ELSE
                v_outcome[v_i] := 'reused';
            END IF;
        ELSIF v_stock IS NULL THEN
            v_outcome[v_i] := 'product_not_found';
        ELSIF v_stock < p_quantities[v_i] THEN
            v_outcome[v_i] := 'out_of_stock';
            v_available[v_i] := v_stock;
        ELSIF v_limit > 0 AND v_customer_units[v_c] + p_quantities[v_i] > v_limit THEN
            v_outcome[v_i] := 'customer_limit';
            v_limit_held[v_i] := v_customer_units[v_c];
        ELSE
            v_outcome[v_i] := 'created';
            v_result_order[v_i] := p_order_ids[v_i];
            v_stock := v_stock - p_quantities[v_i];
            IF v_limit > 0 THEN
                v_customer_units[v_c] := v_customer_units[v_c] + p_quantities[v_i];
            END IF;
            v_creator[v_k] := v_i;
            v_created_slots := v_created_slots || v_i;
        END IF;
    END LOOP;

    -- (4) The orders, in one statement. A conflict on orders_one_per_key can only come from a
    -- writer that skipped the claim (the constraint is the backstop): that request becomes
    -- 'contended' below and its units stay in stock.
    WITH inserted AS (
        INSERT INTO orders AS o
            (order_id, product_id, quantity, customer_id, status, client_id, idempotency_key)
        SELECT p_order_ids[t.s], p_product_id, p_quantities[t.s], p_customer_ids[t.s], 'CREATED',
               p_client_ids[t.s], p_keys[t.s]
        FROM unnest(v_created_slots) AS t(s)
        ORDER BY t.s
        ON CONFLICT (client_id, idempotency_key) DO NOTHING
        RETURNING o.order_id, o.quantity
    )
    SELECT coalesce(array_agg(inserted.order_id), '{}'), coalesce(sum(inserted.quantity), 0)
    INTO v_inserted, v_taken
    FROM inserted;

    IF v_taken > 0 THEN
        UPDATE products p SET stock = p.stock - v_taken, updated_at = now()
        WHERE p.product_id = p_product_id;
    END IF;

    -- (5) The claims we took end pointing at the order that holds their key, or go: a refused
    -- request does not consume its key. A claim whose first slot created the order is right
    -- as inserted.
    UPDATE idempotency_keys kc
    SET order_id = CASE WHEN keys.creator IS NOT NULL THEN p_order_ids[keys.creator]
                        ELSE v_held_order[keys.replayer] END,
        request_fingerprint = p_fingerprints[coalesce(keys.creator, keys.replayer)]
    FROM (
        SELECT t.s AS first_slot,
               CASE WHEN p_order_ids[v_creator[t.s]] = ANY (v_inserted) THEN v_creator[t.s] END
                   AS creator,
               v_held_replayer[t.s] AS replayer
        FROM generate_series(1, v_n) AS t(s)
        WHERE v_first_key[t.s] = t.s AND v_ours[t.s]
    ) AS keys
    WHERE ((keys.creator IS NOT NULL AND keys.creator <> keys.first_slot)
           OR (keys.creator IS NULL AND keys.replayer IS NOT NULL))
      AND kc.client_id = p_client_ids[keys.first_slot]
      AND kc.idempotency_key = p_keys[keys.first_slot];

    DELETE FROM idempotency_keys kc
    USING generate_series(1, v_n) AS t(s)
    WHERE v_first_key[t.s] = t.s AND v_ours[t.s]
      AND v_held_replayer[t.s] IS NULL
      AND (v_creator[t.s] IS NULL OR NOT p_order_ids[v_creator[t.s]] = ANY (v_inserted))
      AND kc.client_id = p_client_ids[t.s]
      AND kc.idempotency_key = p_keys[t.s];

    RETURN QUERY
    SELECT s.slot::integer,
           CASE
               -- A created order that lost to orders_one_per_key, or a replay of it.
               WHEN v_outcome[s.slot] IN ('created', 'replayed') AND o.order_id IS NULL
                   THEN 'contended'
               ELSE v_outcome[s.slot]
           END,
           v_stock_start - v_taken,
           v_available[s.slot],
           CASE WHEN v_outcome[s.slot] = 'customer_limit' THEN v_limit END,
           v_limit_held[s.slot],
           o.order_id, o.product_id, o.quantity, o.customer_id, o.status, o.client_id,
           o.idempotency_key, o.cancel_reason, o.created_at, o.updated_at, o.cancelled_at
    FROM generate_series(1, v_n) AS s(slot)
    LEFT JOIN orders o ON o.order_id = v_result_order[s.slot]
    ORDER BY s.slot;
END
$$;

-- The one-request function, for any writer that still calls it (an instance of the previous
-- release during a rolling upgrade): same signature and outcomes as before, now through
-- place_orders, so it honours max_per_customer too (refusal LB429, DETAIL = units held).
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
    v_placed record;
BEGIN
    SELECT * INTO v_placed
    FROM place_orders(p_product_id, ARRAY[p_client_id], ARRAY[p_key], ARRAY[p_fingerprint],
                      ARRAY[p_order_id], ARRAY[p_quantity], ARRAY[p_customer_id],
                      p_retention_seconds);
    CASE v_placed.outcome
        WHEN 'product_not_found' THEN
            RAISE EXCEPTION 'product not found' USING ERRCODE = 'LB404';
        WHEN 'out_of_stock' THEN
            RAISE EXCEPTION 'out of stock' USING ERRCODE = 'LB409',
                DETAIL = v_placed.available::text;
        WHEN 'customer_limit' THEN
            RAISE EXCEPTION 'customer limit reached' USING ERRCODE = 'LB429',
                DETAIL = v_placed.customer_held::text;
        ELSE
            RETURN QUERY SELECT v_placed.outcome, v_placed.order_id, v_placed.product_id,
                v_placed.quantity, v_placed.customer_id, v_placed.status, v_placed.client_id,
                v_placed.idempotency_key, v_placed.cancel_reason, v_placed.created_at,
                v_placed.updated_at, v_placed.cancelled_at;
    END CASE;
END
$$;
