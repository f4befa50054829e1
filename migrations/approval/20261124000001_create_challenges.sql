-- approval-svc's schema: one row per challenge, which is also the saga's outbox record. The
-- service's conditional statements keep the state machine; the constraints below make the
-- states that must never exist (APPROVED without an order, a failure without a reason, a
-- lost idempotency key) impossible even for a buggy statement.

CREATE TABLE challenges (
    challenge_id     uuid        PRIMARY KEY,
    user_id          uuid        NOT NULL,
    product_id       uuid        NOT NULL,
    quantity         integer     NOT NULL CHECK (quantity > 0),
    title            text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    status           text        NOT NULL CHECK (status IN (
                         'PENDING', 'APPROVING', 'APPROVED', 'APPROVE_FAILED',
                         'REJECTED', 'REVOKING', 'REVOKED')),
    failure_reason   text        CHECK (failure_reason IN (
                         'OUT_OF_STOCK', 'PRODUCT_NOT_FOUND', 'ORDER_SERVICE_UNAVAILABLE',
                         'CIRCUIT_OPEN', 'DEADLINE_EXCEEDED', 'REJECTED_BY_ORDER_SERVICE')),
    failure_message  text        NOT NULL DEFAULT '',
    order_id         uuid,
    -- Made once, on the first approval attempt, and kept for every later attempt, so order-svc
    -- replays an order an earlier attempt created instead of creating a second one.
    idempotency_key  text        UNIQUE CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    -- Every attempt (manual, retry, completer) adds one; it is also the fencing token of the
    -- post-call write (`WHERE attempts = $n`), so a stale attempt can never overwrite a newer one.
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- `attempts` when the current automatic-retry budget started (0, or when requeued).
    budget_start     integer     NOT NULL DEFAULT 0 CHECK (budget_start >= 0 AND budget_start <= attempts),
    approver         text        NOT NULL DEFAULT '',
    decision_reason  text        NOT NULL DEFAULT '',
    dead_lettered    boolean     NOT NULL DEFAULT false,
    next_attempt_at  timestamptz,
    lease_expires_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),

    -- Never APPROVED (or beyond) without its order; never an order while not approved.
    CONSTRAINT order_iff_approved
        CHECK ((status IN ('APPROVED', 'REVOKING', 'REVOKED')) = (order_id IS NOT NULL)),
    -- Every state reached through an approval attempt carries the key.
    CONSTRAINT key_once_attempted
        CHECK (status IN ('PENDING', 'REJECTED') OR idempotency_key IS NOT NULL),
    -- In-flight states hold a lease (the completer takes over after it), others none.
    CONSTRAINT lease_iff_in_flight
        CHECK ((status IN ('APPROVING', 'REVOKING')) = (lease_expires_at IS NOT NULL)),
    -- A failure always says why.
    CONSTRAINT reason_iff_failed
        CHECK ((status = 'APPROVE_FAILED') = (failure_reason IS NOT NULL)),
    -- Only failed approvals are dead letters or scheduled for a retry, never both.
    CONSTRAINT retry_state
        CHECK ((NOT dead_lettered AND next_attempt_at IS NULL)
               OR (status = 'APPROVE_FAILED' AND NOT (dead_lettered AND next_attempt_at IS NOT NULL)))
);

-- ListChallenges by status, in id (= creation, UUID v7) order for keyset paging.
CREATE INDEX challenges_by_status ON challenges (status, challenge_id);

-- The completer's work queues, kept small by being partial.
CREATE INDEX challenges_in_flight_by_lease ON challenges (lease_expires_at)
    WHERE status IN ('APPROVING', 'REVOKING');
CREATE INDEX challenges_retry_due ON challenges (next_attempt_at)
    WHERE status = 'APPROVE_FAILED' AND NOT dead_lettered AND next_attempt_at IS NOT NULL;

-- ListDeadLetters, in id order.
CREATE INDEX challenges_dead_letters ON challenges (challenge_id) WHERE dead_lettered;
