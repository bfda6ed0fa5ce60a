-- Tag rows keyed by what the tag-driven queries walk (name, value, newest first), in one B-tree: the rowid table,
-- its `tags_by_value` index and its `tags_by_event` index were three B-trees and three inserts per tag. Rows of a
-- removed event are found from its JSON (`delete_where`), so no index by event is needed.
CREATE TABLE tags_keyed (
    name       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    event_seq  INTEGER NOT NULL,
    PRIMARY KEY (name, value, created_at DESC, event_seq)
) WITHOUT ROWID;
INSERT OR IGNORE INTO tags_keyed (name, value, created_at, event_seq) SELECT name, value, created_at, event_seq FROM tags;
DROP TABLE tags;
ALTER TABLE tags_keyed RENAME TO tags;
