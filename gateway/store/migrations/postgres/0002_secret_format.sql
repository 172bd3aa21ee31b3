-- Issued secrets gained a keyed checksum (format v2). Every row written before this
-- migration, and by a replica of the previous version during a rolling upgrade, is 'v1':
-- the gateway looks a v1-shaped credential up only when its digest is one of these rows.
ALTER TABLE api_keys ADD COLUMN secret_format TEXT NOT NULL DEFAULT 'v1';
CREATE INDEX api_keys_secret_format_v1 ON api_keys (digest) WHERE secret_format = 'v1';
