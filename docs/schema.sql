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
    serving_container_id text
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
