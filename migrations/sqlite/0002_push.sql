-- Push registrations: one row per (pubkey, device). List fields are JSON arrays.
CREATE TABLE push_registrations (
    pubkey          BLOB    NOT NULL,
    device_id       TEXT    NOT NULL,
    kinds           TEXT    NOT NULL,
    p_tags          TEXT    NOT NULL,
    e_tags          TEXT    NOT NULL,
    authors         TEXT    NOT NULL,
    exclude_authors TEXT    NOT NULL,
    relays          TEXT    NOT NULL,
    platform        TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (pubkey, device_id)
);
CREATE INDEX push_registrations_by_device ON push_registrations (device_id);

-- Presence per pubkey. last_applied_at is the created_at of the newest 22456 event applied, to refuse replays.
CREATE TABLE push_presence (
    pubkey          BLOB    PRIMARY KEY,
    online          INTEGER NOT NULL,
    last_heartbeat  INTEGER NOT NULL,
    last_applied_at INTEGER NOT NULL
);
