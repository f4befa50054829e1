-- The consistency checker's memory: where the last incremental check got to, and which
-- incidents have been alerted (so the same violation never pages twice).

CREATE TABLE consistency_watermarks (
    name       text        PRIMARY KEY,
    -- Challenges updated at or after this (minus a safety overlap) are checked next time.
    checked_to timestamptz NOT NULL
);

CREATE TABLE consistency_incidents (
    dedup_key    text        PRIMARY KEY,
    invariant    text        NOT NULL,
    challenge_id uuid,
    order_id     uuid,
    product_id   uuid,
    detail       text        NOT NULL,
    opened_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    -- NULL while open; healed or no longer seen closes it.
    resolved_at  timestamptz
);

CREATE INDEX consistency_incidents_open ON consistency_incidents (opened_at) WHERE resolved_at IS NULL;

-- Incremental checks read challenges changed since the watermark.
CREATE INDEX challenges_by_update ON challenges (updated_at);
