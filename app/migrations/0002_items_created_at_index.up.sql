-- Additive: a release built before this migration runs unchanged against it.
-- xtask: additive
CREATE INDEX items_created_at ON items (created_at);
