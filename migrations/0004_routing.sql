-- Endpoints belong to the proxy: a deployment says how it is replaced (start-first: the new
-- container beside the old, routed once Ready, the old drained; or stop-first, for workloads that
-- cannot run twice) and how long the old one may drain; status says where the route goes.

ALTER TABLE deployments
    ADD COLUMN strategy text NOT NULL DEFAULT 'start-first'
        CHECK (strategy IN ('start-first', 'stop-first')),
    ADD COLUMN drain_timeout_s integer NOT NULL DEFAULT 30
        CHECK (drain_timeout_s BETWEEN 0 AND 3600);

ALTER TABLE status
    ADD COLUMN route text,
    ADD COLUMN serving_version integer,
    ADD COLUMN serving_container_id text;

-- The rollout steps the proxy adds to a project's history.
ALTER TABLE events
    DROP CONSTRAINT events_kind_check,
    ADD CONSTRAINT events_kind_check CHECK (kind IN (
        'desired', 'action', 'refused', 'health', 'converged', 'gave_up',
        'routed', 'draining', 'drained'
    ));
