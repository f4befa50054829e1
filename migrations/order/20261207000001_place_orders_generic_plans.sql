-- Issue 11, session 12: place_orders plans its statements once per connection. Its statements
-- take the batch's arrays, whose length a generic plan cannot see, so PostgreSQL's plan cache
-- judged every custom plan cheaper than the generic one and planned each statement again on
-- every call: about 0.17 ms of a one-order call's ~0.5 ms in the database (pgbench, prepared,
-- one backend: 0.70-0.74 ms per call against 0.53-0.57 ms with generic plans). The batches of
-- the approval flood are small, so that planning was a large part of an order's cost there.
-- A generic plan is safe here because of 20261203000001_place_orders_never_scans.sql: with
-- scans, hash and merge joins off inside the function, every statement is a nested loop over
-- an index whatever the statistics, so a plan made while orders was small stays right as it
-- grows.
ALTER FUNCTION place_orders(uuid, text[], text[], bytea[], uuid[], integer[], uuid[],
                            double precision)
    SET plan_cache_mode = force_generic_plan;
