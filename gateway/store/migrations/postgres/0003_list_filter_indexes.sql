-- Every filter the list API accepts has an index to walk in seq order (keyset paging), at
-- any depth, without a sort and without reading rows only to throw them away:
--   no filter              api_keys_kind_seq
--   actor_id               api_keys_kind_actor (0001)
--   status ACTIVE          api_keys_kind_unrevoked (skips the revoked keys)
--   actor_id + ACTIVE      api_keys_kind_actor
--   status REVOKED         api_keys_kind_revoked, with actor_id api_keys_kind_actor_revoked
--   status EXPIRED         api_keys_kind_expiring, with actor_id api_keys_kind_actor_expiring
-- Whether a key is expired depends on the clock, so the EXPIRED indexes hold the keys that
-- can expire, with expire_time as a trailing key column: the scan tests expire_time in the
-- index and fetches from the table only the rows it returns.
-- Plain CREATE INDEX, as migrations run in one transaction: on a large table every build
-- blocks writes to api_keys (not reads) until the migration commits: 3 s for all six at
-- 1,000,000 keys on a small machine.
CREATE INDEX api_keys_kind_seq ON api_keys (kind, seq);
CREATE INDEX api_keys_kind_unrevoked ON api_keys (kind, seq) WHERE revoke_time IS NULL;
CREATE INDEX api_keys_kind_revoked ON api_keys (kind, seq) WHERE revoke_time IS NOT NULL;
CREATE INDEX api_keys_kind_actor_revoked ON api_keys (kind, actor_id, seq)
    WHERE revoke_time IS NOT NULL;
CREATE INDEX api_keys_kind_expiring ON api_keys (kind, seq, expire_time)
    WHERE revoke_time IS NULL AND expire_time IS NOT NULL;
CREATE INDEX api_keys_kind_actor_expiring ON api_keys (kind, actor_id, seq, expire_time)
    WHERE revoke_time IS NULL AND expire_time IS NOT NULL;
