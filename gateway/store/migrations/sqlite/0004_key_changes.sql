-- The change log: one row per change that can alter a verify answer (revoke, rotate,
-- update, delete, a digest moved to the current pepper), written in the change's own
-- transaction. Every replica follows it, so a change reaches every replica through the
-- store even when Redis cannot carry it. items: JSON [[digest, key_id], ...]
CREATE TABLE key_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    items TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX key_changes_at ON key_changes (at)
