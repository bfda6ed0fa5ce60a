-- NIP-50: each event's content as a full-text vector, with the 'simple' configuration (words lower-cased, no
-- language's stemming or stop words: notes come in every language), in a GIN index. The write path fills it from
-- `protocol::search::indexed_text` (encrypted kinds and empty contents stay NULL); this backfill follows that rule.
ALTER TABLE events ADD COLUMN search TSVECTOR;
-- Events whose JSON has no \u0000 escape in one statement; the few others one by one, since PostgreSQL's json
-- refuses that escape and one such event must not stop the upgrade (it stays unindexed).
UPDATE events SET search = to_tsvector('simple', left(json::jsonb ->> 'content', 65536))
WHERE kind NOT IN (4, 13, 1059, 1060)
    -- (CASE, so that the escape is looked for before the cast: AND does not promise an order.)
    AND CASE WHEN strpos(json, '\u0000') = 0 THEN json::jsonb ->> 'content' <> '' ELSE false END;
DO $$
DECLARE
    r RECORD;
BEGIN
    FOR r IN SELECT seq FROM events WHERE kind NOT IN (4, 13, 1059, 1060) AND strpos(json, '\u0000') > 0 LOOP
        BEGIN
            UPDATE events SET search = to_tsvector('simple', left(json::jsonb ->> 'content', 65536)) WHERE seq = r.seq;
        EXCEPTION WHEN others THEN
            NULL;
        END;
    END LOOP;
END $$;
CREATE INDEX events_by_search ON events USING GIN (search);
