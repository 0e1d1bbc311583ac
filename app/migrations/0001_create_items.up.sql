-- The items the API writes: the rows migrations and backups are tested with.
CREATE TABLE items (
    id bigserial PRIMARY KEY,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);
