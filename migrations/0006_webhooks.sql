-- Webhooks: an owner's hooks, and an outbox of deliveries written by the database itself in the
-- transaction that records each matching event (a trigger on events, and one on projects for
-- `deleted`), so that no writer (API, operator, psql) can record an event and lose its delivery.

-- A hook of `owner`'s: for the projects of `scope` (NULL: every owner's, a hook an admin made).
-- `secret` signs each delivery (Standard Webhooks: HMAC-SHA256 with the base64-decoded key of
-- "whsec_<base64>"); it is shown once, when the hook is made, and never again.
CREATE TABLE webhooks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner       text NOT NULL CHECK (owner ~ '^[a-z][a-z0-9-]{0,62}$'),
    scope       text CHECK (scope ~ '^[a-z][a-z0-9-]{0,62}$'),
    url         text NOT NULL CHECK (url ~ '^https?://[^/@]+' AND length(url) <= 2000),
    events      text[] NOT NULL CHECK (
                    cardinality(events) > 0 AND events <@ ARRAY[
                        'converged', 'rollout_failed', 'stalled', 'crash_loop',
                        'drift_repaired', 'deleted'
                    ]::text[]
                ),
    secret      text NOT NULL CHECK (secret ~ '^whsec_[A-Za-z0-9+/]+=*$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_owner ON webhooks (owner);

-- One POST of one event to one hook. Delivered in id order per (webhook, project): a delivery
-- waits while an earlier one of the same pair is pending. `claimed_epoch` is the operator lease
-- epoch of the attempt in flight (its `next_attempt_at` is then the attempt's deadline): a new
-- tenure makes the rows other epochs left in flight due at once. No foreign key to projects or
-- events: a delivery outlives the project it tells about (`deleted`).
CREATE TABLE webhook_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook          bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    project          text NOT NULL,
    event_id         bigint,
    event_type       text NOT NULL,
    payload          jsonb NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    claimed_epoch    bigint,
    last_attempt_at  timestamptz,
    last_status      integer,
    last_answer      text CHECK (length(last_answer) <= 8192),
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook, project, id)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook, id);

-- Which webhook event an event row is (NULL: none).
CREATE FUNCTION webhook_event_type(kind text, reason text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN kind = 'converged' THEN 'converged'
        WHEN kind = 'health' AND reason = 'RolloutFailed' THEN 'rollout_failed'
        WHEN kind = 'health' AND reason = 'Crashed' THEN 'crash_loop'
        WHEN kind = 'action' AND reason = 'DriftRepaired' THEN 'drift_repaired'
        WHEN kind = 'gave_up' THEN 'stalled'
    END
$$;

-- The outbox rows of one event, for every hook that asked for its type and may see its project.
CREATE FUNCTION webhook_enqueue(
    p_type text, p_project text, p_owner text, p_event bigint, p_data jsonb
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (webhook, project, event_id, event_type, payload)
    SELECT h.id, p_project, p_event, p_type, jsonb_build_object(
        'type', p_type,
        'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', p_data
    )
    FROM webhooks h
    WHERE p_type = ANY (h.events) AND (h.scope IS NULL OR h.scope = p_owner)
    ORDER BY h.id;
    IF FOUND THEN
        PERFORM pg_notify('tether_webhooks', p_project);
    END IF;
END
$$;

-- An event's deliveries, with what status says of the project as the event is written (the
-- operator writes status before its events, in the same transaction).
CREATE FUNCTION webhook_on_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_type text := webhook_event_type(NEW.kind, NEW.reason);
    v_owner text;
BEGIN
    IF v_type IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT p.owner INTO v_owner FROM projects p WHERE p.name = NEW.project;
    PERFORM webhook_enqueue(v_type, NEW.project, v_owner, NEW.id, jsonb_build_object(
        'project', NEW.project,
        'owner', v_owner,
        'event_id', NEW.id,
        'generation', NEW.generation,
        'reason', NEW.reason,
        'message', NEW.message,
        'at', NEW.created_at,
        'status', (
            SELECT jsonb_build_object(
                'phase', s.phase,
                'running_version', s.running_version,
                'serving_version', s.serving_version,
                'failed_version', s.failed_version,
                'crash_count', s.crash_count,
                'last_exit_code', s.last_exit_code,
                'oom_killed', s.oom_killed,
                'endpoint', s.endpoint
            )
            FROM status s WHERE s.project = NEW.project
        )
    ));
    RETURN NULL;
END
$$;

CREATE TRIGGER events_webhooks AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION webhook_on_event();

-- A project is deleted once the operator has removed its containers: the `deleted` event.
CREATE FUNCTION webhook_on_project_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM webhook_enqueue('deleted', OLD.name, OLD.owner, NULL, jsonb_build_object(
        'project', OLD.name,
        'owner', OLD.owner,
        'generation', OLD.generation,
        'reason', 'Deleted',
        'message', 'the project and its containers are gone',
        'at', now()
    ));
    RETURN NULL;
END
$$;

CREATE TRIGGER projects_webhooks AFTER DELETE ON projects
    FOR EACH ROW EXECUTE FUNCTION webhook_on_project_deleted();
