-- Content hashes acted on recently, shared by every node on the database: the SHA-256 of a Marmot push trigger's
-- decoded content (never the content), so that a trigger replayed under a new gift wrap wakes nobody. Seconds.
CREATE TABLE sightings (
    hash    BLOB    PRIMARY KEY,
    seen_at INTEGER NOT NULL
) WITHOUT ROWID;
