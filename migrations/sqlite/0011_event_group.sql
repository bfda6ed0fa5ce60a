-- NIP-29: the group an event belongs to (its first `h` tag's value, `VerifiedEvent::group`), so that hiding the
-- private groups a reader is not in costs one comparison per row, however many groups are hidden.
ALTER TABLE events ADD COLUMN grp TEXT;
UPDATE events SET grp = (
    SELECT t.value ->> 1 FROM json_each(events.json, '$.tags') t
    WHERE t.value ->> 0 = 'h' AND t.value ->> 1 IS NOT NULL
    LIMIT 1
)
WHERE seq IN (SELECT event_seq FROM tags WHERE name = 'h');
