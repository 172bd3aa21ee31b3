-- Verifications per key, per minute and outcome (VALID, EXPIRED, REVOKED, RATE_LIMITED...),
-- counted in memory and added here in batches (the verify path writes nothing). minute:
-- the bucket's start in seconds since the epoch, a multiple of 60. Hours and days are sums.
CREATE TABLE key_usage (
    key_id TEXT NOT NULL,
    minute BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (key_id, minute, outcome)
);
CREATE INDEX key_usage_minute ON key_usage (minute)
