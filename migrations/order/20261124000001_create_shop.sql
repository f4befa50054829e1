-- The shop's schema. The constraints make oversell and duplicate orders impossible even for a
-- buggy caller: the service's statements are the first line of defence, these are the last.

CREATE TABLE products (
    product_id    uuid        PRIMARY KEY,
    name          text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    stock         bigint      NOT NULL CHECK (stock >= 0),
    initial_stock bigint      NOT NULL CHECK (initial_stock >= 0),
    restocked     bigint      NOT NULL DEFAULT 0 CHECK (restocked >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- Stock only leaves through orders, so it can never exceed what ever came in.
    CONSTRAINT stock_within_supply CHECK (stock <= initial_stock + restocked)
);

CREATE TABLE orders (
    order_id        uuid        PRIMARY KEY,
    product_id      uuid        NOT NULL REFERENCES products (product_id),
    quantity        integer     NOT NULL CHECK (quantity > 0),
    customer_id     uuid        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('CREATED', 'CANCELLED')),
    client_id       text        NOT NULL,
    idempotency_key text        NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    cancel_reason   text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    cancelled_at    timestamptz,
    CONSTRAINT cancelled_at_iff_cancelled CHECK ((status = 'CANCELLED') = (cancelled_at IS NOT NULL))
);

CREATE INDEX orders_by_product ON orders (product_id, order_id);
CREATE INDEX orders_by_customer ON orders (customer_id, order_id);
CREATE INDEX orders_by_key ON orders (client_id, idempotency_key);

-- One row per claimed idempotency key: the claim, the request's fingerprint and the order it
-- produced. The primary key is what makes "at most one order per key" hold under concurrency.
CREATE TABLE idempotency_keys (
    client_id           text        NOT NULL,
    idempotency_key     text        NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    request_fingerprint bytea       NOT NULL,
    -- Deferred: the key is claimed (with the order id chosen up front) before the order row is
    -- inserted in the same transaction.
    order_id            uuid        NOT NULL REFERENCES orders (order_id) DEFERRABLE INITIALLY DEFERRED,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    PRIMARY KEY (client_id, idempotency_key)
);

CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
