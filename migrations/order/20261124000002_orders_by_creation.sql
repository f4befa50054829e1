-- Incremental scans (the consistency checker) list orders created after a watermark.
CREATE INDEX orders_by_created_at ON orders (created_at);
