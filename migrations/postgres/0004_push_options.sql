-- A registration's optional choices (0xchat protocol): notify only for events by its `authors` (gift wraps
-- excepted); skip hellthreads (YakiHonne's `enableMaxMentions`).
ALTER TABLE push_registrations ADD COLUMN only_from_authors BIGINT NOT NULL DEFAULT 0;
ALTER TABLE push_registrations ADD COLUMN limit_mentions BIGINT NOT NULL DEFAULT 0;
