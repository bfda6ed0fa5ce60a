-- Which node watches which remote relay, until when (seconds). With SQLite there is one node; the table keeps the
-- code path the same as with PostgreSQL.
CREATE TABLE upstream_leases (
    relay      TEXT    PRIMARY KEY,
    node       TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
