-- Token lifecycle: tokens that only read, that expire, that are revoked (kept, so that the events
-- they wrote still name them), and when each was last used (recorded at most once a minute).
-- Desired-change events name the token that asked for them.

ALTER TABLE tokens
    ADD COLUMN read_only    boolean NOT NULL DEFAULT false,
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN revoked_at   timestamptz,
    ADD COLUMN last_used_at timestamptz;

ALTER TABLE events
    ADD COLUMN token_id bigint;  -- the token of a desired change; NULL for the operator's events

-- A TCP health check has no path (the API's schema says so since tokens' migration too): drop the
-- null path that deployments stored before.
UPDATE deployments SET health = health - 'path' WHERE health ->> 'type' = 'tcp';
