-- The relay nodes on this database, so that a starting node can tell a live node from one that is gone: it refuses
-- to take the id of a live node (two nodes with one id would skip each other's announcements), and it releases the
-- job and upstream leases of every node that is not live (a node that dies under a random id never comes back to
-- release its own). Times are the database's clock, in seconds, so that nodes on several hosts agree.
CREATE TABLE nodes (
    node       TEXT   PRIMARY KEY,
    started_at BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL
);
