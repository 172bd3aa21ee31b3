-- Issued secrets gained a keyed checksum (format v2). Every row written before this
-- migration, and by a replica of the previous version during a rolling upgrade, is 'v1',
-- imported keys are 'raw'. Credentials of v1 and raw keys carry no checksum the gateway
-- can check, so it looks one up only when its digest is one of these rows (read in seq
-- order, by the primary key).
ALTER TABLE api_keys ADD COLUMN secret_format TEXT NOT NULL DEFAULT 'v1';
