CREATE TABLE api_keys (
    seq BIGSERIAL PRIMARY KEY,
    key_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '',
    actor_id TEXT NOT NULL DEFAULT '',
    scopes TEXT NOT NULL DEFAULT '[]',
    visibility TEXT NOT NULL,
    metadata TEXT,
    allowed_cidrs TEXT NOT NULL DEFAULT '[]',
    rate_limit TEXT,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    expire_time BIGINT,
    last_used_time BIGINT,
    revoke_time BIGINT,
    revocation_reason TEXT,
    revocation_description TEXT NOT NULL DEFAULT '',
    request_id TEXT,
    request_fingerprint TEXT
);
CREATE UNIQUE INDEX api_keys_request_id ON api_keys (kind, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX api_keys_kind_actor ON api_keys (kind, actor_id, seq);
CREATE TABLE gateway_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
