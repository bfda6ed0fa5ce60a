-- A durable job queue (the push jobs), written in the same transaction as the event that caused them.
-- Finished jobs stay for a while so that `dedup_key` keeps one event from causing the same job twice.
-- Times are in milliseconds.
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY,
    dedup_key   TEXT    NOT NULL UNIQUE,
    group_key   TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    -- NULL once the job is finished.
    due_at      INTEGER,
    -- 1 while a worker holds it; cleared at start, since no worker survives a restart.
    leased      INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    finished_at INTEGER
);
CREATE INDEX jobs_by_due ON jobs (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX jobs_by_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
