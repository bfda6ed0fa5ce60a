-- NIP-50: a full-text index over event content, keyed by the event's `seq`. Contentless (the text is in
-- `events.json` already), with deletes allowed, so that a removed event's entry goes with it (`delete_where`).
-- Encrypted kinds are left out; what is indexed is decided in `protocol::search::indexed_text`, which this
-- one-time backfill of existing events follows.
CREATE VIRTUAL TABLE events_fts USING fts5(
    content,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 0'
);
INSERT INTO events_fts (rowid, content)
SELECT seq, substr(json ->> '$.content', 1, 65536) FROM events
WHERE kind NOT IN (4, 13, 1059, 1060) AND json ->> '$.content' <> '';
