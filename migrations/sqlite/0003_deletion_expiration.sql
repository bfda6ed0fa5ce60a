-- NIP-40: when an event stops being served (NULL = never).
ALTER TABLE events ADD COLUMN expires_at INTEGER;
CREATE INDEX events_by_expiry ON events (expires_at) WHERE expires_at IS NOT NULL;

-- NIP-09 deletions by id: the target may arrive after the deletion, so the id is remembered with the deleting
-- author; only that author's event with that id is refused, so a stranger's deletion blocks nothing.
CREATE TABLE deleted_events (
    id     BLOB NOT NULL,
    pubkey BLOB NOT NULL,
    PRIMARY KEY (id, pubkey)
);

-- NIP-09 deletions by address (`a` tag): versions up to `until` are refused.
CREATE TABLE deleted_addresses (
    pubkey BLOB    NOT NULL,
    kind   INTEGER NOT NULL,
    d_tag  TEXT    NOT NULL,
    until  INTEGER NOT NULL,
    PRIMARY KEY (pubkey, kind, d_tag)
);

-- NIP-62 requests to vanish: everything of the pubkey up to `until` is gone and refused.
CREATE TABLE vanished (
    pubkey BLOB    PRIMARY KEY,
    until  INTEGER NOT NULL
);
