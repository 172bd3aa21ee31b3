-- The replicas that follow the change log, each with how far it has read it. followed_at:
-- the store time (microseconds) before which every change is applied there. trusted_until:
-- until when that replica may answer from its caches without reading the log again (it
-- stops by itself then). A change is confirmed when every replica trusted past it has
-- followed past it, or acknowledged it through Redis.
CREATE TABLE replicas (
    replica_id TEXT PRIMARY KEY,
    followed_at BIGINT NOT NULL,
    trusted_until BIGINT NOT NULL
)
