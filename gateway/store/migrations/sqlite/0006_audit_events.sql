-- The audit trail: one row per admin change, written in the change's own transaction, and
-- one per minute for refused admin authentications and failed verifications (counted).
-- at: microseconds since the epoch, details: JSON. seq orders the pages, newest first.
CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    at BIGINT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    principal TEXT NOT NULL,
    client_address TEXT NOT NULL,
    request_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX audit_events_at ON audit_events (at)
