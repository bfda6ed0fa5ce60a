-- The PostgreSQL schema: the same tables as the SQLite one (see ARCHITECTURE.md), in PostgreSQL's types.
-- Integers the push registry reads are BIGINT, so that one code path (sqlx's Any driver) reads both databases.

-- Events, one row each. `d_tag` is the replacement key (NULL for regular kinds, '' for replaceable ones, the `d`
-- value for addressable ones). `seq` orders commits: writers take one advisory lock per batch, so sequence order
-- is commit order, which lets another node catch up from the last `seq` it saw.
CREATE TABLE events (
    seq        BIGSERIAL PRIMARY KEY,
    id         BYTEA     NOT NULL UNIQUE,
    pubkey     BYTEA     NOT NULL,
    created_at BIGINT    NOT NULL,
    kind       INTEGER   NOT NULL,
    d_tag      TEXT,
    json       TEXT      NOT NULL,
    expires_at BIGINT,
    -- The node that accepted it: catching up after a lost connection skips a node's own events.
    node       TEXT      NOT NULL,
    -- The first value of every single-letter tag, as 'letter:value': what NIP-01 tag filters ask for.
    tags       TEXT[]    NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_time ON events (created_at DESC, id);
CREATE INDEX events_by_author ON events (pubkey, created_at DESC);
CREATE INDEX events_by_author_kind ON events (pubkey, kind, created_at DESC);
CREATE INDEX events_by_kind ON events (kind, created_at DESC);
CREATE UNIQUE INDEX events_by_replacement_key ON events (pubkey, kind, d_tag) WHERE d_tag IS NOT NULL;
CREATE INDEX events_by_expiry ON events (expires_at) WHERE expires_at IS NOT NULL;

-- Tag filters use a GIN index over `tags` rather than a separate tag table with a B-tree: measured
-- (benches/postgres_tags.sql, BENCHMARKS.md), the newest 50 events with a popular tag took 0.25 ms with GIN (the
-- planner walks events_by_time and checks each row's array) against 140 ms through a tag table (it gathers every
-- match first), and a rare tag 0.25 ms against 0.4 ms; the GIN index is also a tenth of the size.
CREATE INDEX events_by_tags ON events USING GIN (tags);

CREATE TABLE deleted_events (
    id     BYTEA NOT NULL,
    pubkey BYTEA NOT NULL,
    PRIMARY KEY (id, pubkey)
);
CREATE TABLE deleted_addresses (
    pubkey BYTEA   NOT NULL,
    kind   INTEGER NOT NULL,
    d_tag  TEXT    NOT NULL,
    until  BIGINT  NOT NULL,
    PRIMARY KEY (pubkey, kind, d_tag)
);
CREATE TABLE vanished (
    pubkey BYTEA  PRIMARY KEY,
    until  BIGINT NOT NULL
);

-- The durable job queue. A claimed job's due_at moves to the end of its lease, so a job whose node died is due
-- again when the lease runs out; `leased_by` names the node, so that a restarted node releases its own at once.
CREATE TABLE jobs (
    id          BIGSERIAL PRIMARY KEY,
    dedup_key   TEXT   NOT NULL UNIQUE,
    group_key   TEXT   NOT NULL,
    payload     TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    due_at      BIGINT,
    leased_by   TEXT,
    attempts    BIGINT NOT NULL DEFAULT 0,
    finished_at BIGINT
);
CREATE INDEX jobs_by_due ON jobs (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX jobs_by_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE push_registrations (
    pubkey          BYTEA  NOT NULL,
    device_id       TEXT   NOT NULL,
    kinds           TEXT   NOT NULL,
    p_tags          TEXT   NOT NULL,
    e_tags          TEXT   NOT NULL,
    authors         TEXT   NOT NULL,
    exclude_authors TEXT   NOT NULL,
    relays          TEXT   NOT NULL,
    platform        TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    badge           BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (pubkey, device_id)
);
CREATE INDEX push_registrations_by_device ON push_registrations (device_id);

CREATE TABLE push_presence (
    pubkey          BYTEA  PRIMARY KEY,
    online          BIGINT NOT NULL,
    last_heartbeat  BIGINT NOT NULL,
    last_applied_at BIGINT NOT NULL
);

-- Which node watches which remote relay, until when (seconds): one node per relay, taken over once it lapses.
CREATE TABLE upstream_leases (
    relay      TEXT   PRIMARY KEY,
    node       TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
