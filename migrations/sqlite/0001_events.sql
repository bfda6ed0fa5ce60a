-- Events, one row each. `d_tag` is the replacement key: the `d` value for addressable kinds, '' for replaceable
-- kinds, NULL for regular ones; the partial unique index makes "one version per key" a rule of the database.
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY,
    id         BLOB    NOT NULL UNIQUE,
    pubkey     BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    d_tag      TEXT,
    json       TEXT    NOT NULL
);
CREATE INDEX events_by_time ON events (created_at DESC, id);
CREATE INDEX events_by_author ON events (pubkey, created_at DESC);
CREATE INDEX events_by_author_kind ON events (pubkey, kind, created_at DESC);
CREATE INDEX events_by_kind ON events (kind, created_at DESC);
CREATE UNIQUE INDEX events_by_replacement_key ON events (pubkey, kind, d_tag) WHERE d_tag IS NOT NULL;

-- The first value of every single-letter tag, which is all that NIP-01 tag filters can ask for.
-- created_at is copied here so that "newest events with this tag" is one index range.
CREATE TABLE tags (
    event_seq  INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX tags_by_value ON tags (name, value, created_at DESC);
CREATE INDEX tags_by_event ON tags (event_seq);
