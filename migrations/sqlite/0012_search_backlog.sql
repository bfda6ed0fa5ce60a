-- NIP-50: stored events whose content is not yet in `events_fts`. FTS5 writes a new segment (and merges old ones)
-- at every commit that touches it: six or seven pages for a commit of one event, where the event and its other
-- indexes take ten (BENCHMARKS.md). So a stored event leaves its seq here, one small row, and the index takes the
-- backlog in bulk: every `BACKLOG_BATCH` events, before any search is answered, and at start (after a crash).
CREATE TABLE search_backlog (seq INTEGER PRIMARY KEY);
