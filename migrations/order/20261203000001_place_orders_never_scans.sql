-- Issue 11, session 5: place_orders looks its rows up one by one, whatever the planner
-- believes about the orders table. Every join in it is "for each slot of the batch, the one
-- order holding its key / its order id", so a nested loop over an index is the plan by
-- construction. Left to the planner, its statements are planned once per connection and the
-- plans cached; planned while orders was small (a new shop, or the first seconds of a flash
-- sale, before autovacuum analyzes the table) they read the whole table into a hash or scan
-- it to find a batch's 64 keys, and keep doing so as it grows. Measured in
-- `lab bench flash-sale` (hot item, 64 callers): after 20 000 orders a batch of 35 took 7 ms in
-- the database, 200 us per order, most of it in two full reads of orders.
ALTER FUNCTION place_orders(uuid, text[], text[], bytea[], uuid[], integer[], uuid[],
                            double precision)
    SET enable_seqscan = off
    SET enable_hashjoin = off
    SET enable_mergejoin = off;
