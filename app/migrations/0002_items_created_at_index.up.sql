-- Additive: a release built before this migration runs unchanged against it.
CREATE INDEX items_created_at ON items (created_at);
