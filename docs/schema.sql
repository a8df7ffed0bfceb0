-- The documented schema of tether's database: what all migrations together must produce.
-- tests/integration/test_migrations.py checks it against migrations/. Change both together, never one alone.

CREATE TABLE tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner       text NOT NULL CHECK (owner ~ '^[a-z][a-z0-9-]{0,62}$'),
    hash        text NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$'),
    admin       boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    read_only    boolean NOT NULL DEFAULT false,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz  -- recorded at most once a minute per token
);

CREATE TABLE projects (
    name                  text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{0,62}$'),
    owner                 text NOT NULL CHECK (owner ~ '^[a-z][a-z0-9-]{0,62}$'),
    desired_state         text NOT NULL DEFAULT 'stopped'
                          CHECK (desired_state IN ('running', 'stopped')),
    target_version        integer,
    restart_token         integer NOT NULL DEFAULT 0 CHECK (restart_token >= 0),
    generation            bigint NOT NULL DEFAULT 1 CHECK (generation >= 1),
    deletion_requested_at timestamptz,
    host_port             integer NOT NULL UNIQUE CHECK (host_port BETWEEN 1 AND 65535),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- The deletion asked for removes the project's volumes too (else they are kept).
    delete_volumes        boolean NOT NULL DEFAULT false,
    -- Nothing can be desired running without a deployment to run.
    CHECK (desired_state = 'stopped' OR target_version IS NOT NULL)
);
CREATE INDEX projects_owner ON projects (owner);

CREATE TABLE deployments (
    project          text NOT NULL REFERENCES projects (name) ON DELETE CASCADE,
    version          integer NOT NULL CHECK (version >= 1),
    image            text NOT NULL CHECK (length(image) BETWEEN 1 AND 255),
    command          text[],
    env              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(env) = 'object'),
    -- Keys of env whose values are secret: passed to the container, masked in every API answer.
    secret_env       text[] NOT NULL DEFAULT '{}',
    port             integer CHECK (port BETWEEN 1 AND 65535),
    health           jsonb CHECK (health IS NULL OR health->>'type' IN ('http', 'tcp')),
    ready_deadline_s integer NOT NULL DEFAULT 120 CHECK (ready_deadline_s BETWEEN 1 AND 3600),
    stop_grace_s     integer NOT NULL DEFAULT 10 CHECK (stop_grace_s BETWEEN 0 AND 300),
    memory_mb        integer CHECK (memory_mb >= 4),
    cpus             double precision CHECK (cpus > 0),
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- start-first: the new container starts beside the old and is routed once Ready, then the old
    -- drains (up to drain_timeout_s) and stops; stop-first: the old stops before the new starts.
    strategy         text NOT NULL DEFAULT 'start-first'
                     CHECK (strategy IN ('start-first', 'stop-first')),
    drain_timeout_s  integer NOT NULL DEFAULT 30 CHECK (drain_timeout_s BETWEEN 0 AND 3600),
    -- The project's named volumes it mounts: [{name, path, read_only}].
    volumes          jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(volumes) = 'array'),
    PRIMARY KEY (project, version),
    CHECK (health IS NULL OR port IS NOT NULL),
    CONSTRAINT deployments_secret_env_in_env CHECK (env ?& secret_env)
);

-- One target deployment per project, and it must be one of the project's own.
ALTER TABLE projects
    ADD CONSTRAINT projects_target_deployment
    FOREIGN KEY (name, target_version) REFERENCES deployments (project, version)
    DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE status (
    project             text PRIMARY KEY REFERENCES projects (name) ON DELETE CASCADE,
    observed_generation bigint NOT NULL DEFAULT 0 CHECK (observed_generation >= 0),
    phase               text NOT NULL,
    conditions          jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(conditions) = 'array'),
    running_version     integer,
    container_id        text,
    ready_container_id  text,
    endpoint            text,
    attempts            integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at     timestamptz,
    last_error          text,
    crash_count         integer NOT NULL DEFAULT 0 CHECK (crash_count >= 0),
    last_exit_code      integer,
    last_crash_at       timestamptz,
    oom_killed          boolean NOT NULL DEFAULT false,
    failed_version      integer,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    epoch               bigint,  -- the operator lease epoch that wrote it
    -- Where the proxy sends the endpoint (an upstream address, "held"), and what serves it.
    route               text,
    serving_version     integer,
    serving_container_id text,
    node                text  -- the swarm runtime: the node its task runs on
);

-- The project's Docker volumes as the operator last observed them (the API may have no Docker
-- access): written by the operator only, fenced by its epoch.
CREATE TABLE volumes (
    project      text NOT NULL REFERENCES projects (name) ON DELETE CASCADE,
    name         text NOT NULL CHECK (name ~ '^[a-z][a-z0-9-]{0,62}$'),
    docker_name  text NOT NULL,
    size_bytes   bigint CHECK (size_bytes >= 0),
    mounted_by   text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz,
    observed_at  timestamptz NOT NULL DEFAULT now(),
    epoch        bigint,
    PRIMARY KEY (project, name)
);

CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project     text NOT NULL REFERENCES projects (name) ON DELETE CASCADE,
    generation  bigint,
    kind        text NOT NULL
                CONSTRAINT events_kind_check CHECK (kind IN (
                    'desired', 'action', 'refused', 'health', 'converged', 'gave_up',
                    'routed', 'draining', 'drained'
                )),
    reason      text NOT NULL,
    message     text NOT NULL,
    actor       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    epoch       bigint,  -- the operator lease epoch that wrote it; NULL for desired changes
    token_id    bigint   -- the token of a desired change; NULL for the operator's events
);
CREATE INDEX events_project ON events (project, id);

-- Only one operator acts at a time. The holder's session holds an advisory lock (a standby gets it
-- the moment that session ends) and renews `expires_at` (DB clock); once it has expired a standby
-- ends `backend_pid`'s session. Each acquisition increments `epoch`, the fencing token every
-- operator write carries. The row is never deleted: a release only ends the lease.
CREATE TABLE operator_lease (
    name         text PRIMARY KEY,
    holder       text NOT NULL,
    expires_at   timestamptz NOT NULL,
    epoch        bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    backend_pid  integer,
    acquired_at  timestamptz
);

-- Webhooks (migration 0006): an owner's hooks, and the outbox of their deliveries, written by
-- triggers in the transaction of each matching event (events, and a project's deletion).
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

-- The swarm runtime's nodes, as the operator last listed them (each resync).
CREATE TABLE nodes (
    id           text PRIMARY KEY,
    hostname     text NOT NULL,
    address      text NOT NULL,
    state        text NOT NULL,
    availability text NOT NULL,
    role         text NOT NULL,
    seen_at      timestamptz NOT NULL DEFAULT now()
);
