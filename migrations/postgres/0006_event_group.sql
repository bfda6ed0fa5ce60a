-- NIP-29: the group an event belongs to (its first `h` tag's value, `VerifiedEvent::group`), so that hiding the
-- private groups a reader is not in costs one comparison per row, however many groups are hidden. `tags` keeps
-- the tags in order, so its first 'h:' element is the first `h` tag.
ALTER TABLE events ADD COLUMN grp TEXT;
UPDATE events SET grp = (
    SELECT substr(u.t, 3) FROM unnest(events.tags) WITH ORDINALITY AS u(t, n) WHERE u.t LIKE 'h:%' ORDER BY u.n LIMIT 1
)
WHERE EXISTS (SELECT 1 FROM unnest(events.tags) AS u(t) WHERE u.t LIKE 'h:%');
