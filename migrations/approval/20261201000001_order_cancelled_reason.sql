-- A new definitive failure reason: the order under the challenge's key was cancelled outside
-- the saga (issue 9). The column's inline CHECK got PostgreSQL's default name.
ALTER TABLE challenges DROP CONSTRAINT challenges_failure_reason_check;
ALTER TABLE challenges ADD CONSTRAINT challenges_failure_reason_check
    CHECK (failure_reason IN (
        'OUT_OF_STOCK', 'PRODUCT_NOT_FOUND', 'ORDER_SERVICE_UNAVAILABLE',
        'CIRCUIT_OPEN', 'DEADLINE_EXCEEDED', 'REJECTED_BY_ORDER_SERVICE', 'ORDER_CANCELLED'));
