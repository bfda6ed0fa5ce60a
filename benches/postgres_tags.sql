-- Tag look-ups on PostgreSQL: a tag table with a B-tree (as the SQLite schema has) against a GIN index over a tag
-- array on the events table (what migrations/postgres uses, because of what this measures). 500,000 events; every event p-tags one of 10,000 pubkeys (about 50 events each);
-- one event in five carries the hashtag "nostr" (100,000 events). Queries ask, as a REQ does, for the newest 50.
-- Run: createdb tagbench && psql -X -d tagbench -f benches/postgres_tags.sql && dropdb tagbench
\timing off
SET client_min_messages = warning;
DROP TABLE IF EXISTS bench_tags, bench_events;
CREATE TABLE bench_events (seq BIGSERIAL PRIMARY KEY, created_at BIGINT NOT NULL, json TEXT NOT NULL, tag_array TEXT[] NOT NULL);
INSERT INTO bench_events (created_at, json, tag_array)
SELECT 1700000000 + i, repeat('x', 300),
       CASE WHEN i % 5 = 0 THEN ARRAY['p:' || (i % 10000), 't:nostr'] ELSE ARRAY['p:' || (i % 10000)] END
FROM generate_series(1, 500000) AS i;
CREATE INDEX bench_events_by_time ON bench_events (created_at DESC);
CREATE TABLE bench_tags (event_seq BIGINT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, created_at BIGINT NOT NULL);
INSERT INTO bench_tags SELECT seq, split_part(t, ':', 1), split_part(t, ':', 2), created_at FROM bench_events, unnest(tag_array) AS t;
CREATE INDEX bench_tags_by_value ON bench_tags (name, value, created_at DESC);
CREATE INDEX bench_events_by_tags ON bench_events USING GIN (tag_array);
VACUUM ANALYZE bench_events;
VACUUM ANALYZE bench_tags;
SELECT pg_size_pretty(pg_relation_size('bench_tags_by_value') + pg_relation_size('bench_tags')) AS tag_table_and_btree,
       pg_size_pretty(pg_relation_size('bench_events_by_tags')) AS gin_index;
\timing on
\echo 'rare tag (#p, 50 matches), tag table:'
SELECT count(*) FROM (SELECT e.json FROM bench_events e WHERE e.seq IN (SELECT t.event_seq FROM bench_tags t WHERE t.name = 'p' AND t.value = ANY(ARRAY['4242'])) ORDER BY e.created_at DESC LIMIT 50) r;
SELECT count(*) FROM (SELECT e.json FROM bench_events e WHERE e.seq IN (SELECT t.event_seq FROM bench_tags t WHERE t.name = 'p' AND t.value = ANY(ARRAY['4242'])) ORDER BY e.created_at DESC LIMIT 50) r;
\echo 'rare tag (#p, 50 matches), GIN:'
SELECT count(*) FROM (SELECT e.json FROM bench_events e WHERE e.tag_array && ARRAY['p:4242'] ORDER BY e.created_at DESC LIMIT 50) r;
SELECT count(*) FROM (SELECT e.json FROM bench_events e WHERE e.tag_array && ARRAY['p:4242'] ORDER BY e.created_at DESC LIMIT 50) r;
\echo 'popular tag (#t, 100,000 matches), tag table:'
SELECT count(*) FROM (SELECT e.json FROM bench_events e WHERE e.seq IN (SELECT t.event_seq FROM bench_tags t WHERE t.name = 't' AND t.value = ANY(ARRAY['nostr'])) ORDER BY e.created_at DESC LIMIT 50) r;
SELECT count(*) FROM (SELECT e.json FROM bench_events e WHERE e.seq IN (SELECT t.event_seq FROM bench_tags t WHERE t.name = 't' AND t.value = ANY(ARRAY['nostr'])) ORDER BY e.created_at DESC LIMIT 50) r;
\echo 'popular tag (#t, 100,000 matches), GIN:'
SELECT count(*) FROM (SELECT e.json FROM bench_events e WHERE e.tag_array && ARRAY['t:nostr'] ORDER BY e.created_at DESC LIMIT 50) r;
SELECT count(*) FROM (SELECT e.json FROM bench_events e WHERE e.tag_array && ARRAY['t:nostr'] ORDER BY e.created_at DESC LIMIT 50) r;
\timing off
DROP TABLE bench_tags, bench_events;
