-- Content hashes acted on recently, shared by every node on the database: the SHA-256 of a Marmot push trigger's
-- decoded content (never the content), so that a trigger replayed under a new gift wrap, to any node, wakes nobody.
-- Seconds.
CREATE TABLE sightings (
    hash    BYTEA  PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
CREATE INDEX sightings_seen_at ON sightings (seen_at);
