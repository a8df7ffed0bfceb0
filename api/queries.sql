-- Every query tether runs, looked up by name from tether.api.store.

-- name: create_token
-- $5: seconds until it expires (NULL: never).
INSERT INTO tokens (owner, hash, admin, read_only, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5::float8))
RETURNING id, expires_at;

-- name: token_by_hash
-- The token of a hash, and whether it is refused (revoked, expired) by the database's clock. A
-- usable token's last use is recorded in the same round trip, at most once a minute: a write per
-- minute per token, not per request.
WITH found AS (
    SELECT id, owner, admin, read_only, hash, expires_at, revoked_at, last_used_at,
           expires_at IS NOT NULL AND expires_at <= now() AS expired
    FROM tokens WHERE hash = $1
), touched AS (
    UPDATE tokens t SET last_used_at = now()
    FROM found f
    WHERE t.id = f.id AND f.revoked_at IS NULL AND NOT f.expired
      AND (f.last_used_at IS NULL OR f.last_used_at < now() - interval '1 minute')
    RETURNING t.id
)
SELECT id, owner, admin, read_only, hash, expires_at, revoked_at, expired,
       extract(epoch FROM expires_at - now())::float8 AS expires_in_s
FROM found;

-- name: list_tokens
SELECT id, owner, admin, read_only, created_at, last_used_at, expires_at, revoked_at
FROM tokens ORDER BY id;

-- name: revoke_token
-- Revoked once (a second revoke keeps the first time); every API process hears of it at once.
WITH revoked AS (
    UPDATE tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
    RETURNING id, revoked_at
)
SELECT id, revoked_at, pg_notify('tether_tokens', id::text) FROM revoked;

-- name: lock_port_allocation
-- Held until the creating transaction ends, so that concurrent creations never pick the same port.
SELECT pg_advisory_xact_lock(7272001);

-- name: insert_project
-- Takes the lowest free host port of the range (under lock_port_allocation).
INSERT INTO projects (name, owner, host_port)
SELECT $1, $2, port
FROM generate_series($3::integer, $4::integer) AS port
WHERE NOT EXISTS (SELECT 1 FROM projects WHERE host_port = port)
ORDER BY port
LIMIT 1
ON CONFLICT (name) DO NOTHING
RETURNING *;

-- name: project_any_owner
SELECT * FROM projects WHERE name = $1;

-- name: project
-- $2 is the owner the caller may see, or NULL for an admin.
SELECT * FROM projects WHERE name = $1 AND ($2::text IS NULL OR owner = $2);

-- name: lock_project
SELECT * FROM projects WHERE name = $1 AND ($2::text IS NULL OR owner = $2) FOR UPDATE;

-- name: list_projects
SELECT * FROM projects WHERE $1::text IS NULL OR owner = $1 ORDER BY name;

-- name: update_desired
-- Every desired-state change goes through here, and only real changes do: generation counts them.
UPDATE projects
SET desired_state = $2,
    target_version = $3,
    restart_token = $4,
    deletion_requested_at = CASE WHEN $5::boolean THEN coalesce(deletion_requested_at, now()) END,
    generation = generation + 1,
    updated_at = now()
WHERE name = $1
RETURNING *;

-- name: set_desired_state
-- A start ($3 'running') or stop ($3 'stopped') in one statement (one round trip): the project,
-- locked, is changed only if $2 may see it ($2 NULL: an admin), it is at generation $4 ($4 NULL:
-- any), not being destroyed, not desired $3 already, and has a deployment to run; its event ($5
-- reason, $6 message, $7 actor, $8 the acting token's id) and the operator's wake-up go with the
-- change. No row: no such project. `after` NULL: nothing changed, and `before` tells why.
WITH before AS (
    SELECT * FROM projects WHERE name = $1 AND ($2::text IS NULL OR owner = $2) FOR UPDATE
), after AS (
    UPDATE projects p
    SET desired_state = $3, generation = p.generation + 1, updated_at = now()
    FROM before b
    WHERE p.name = b.name
      AND ($4::bigint IS NULL OR b.generation = $4)
      AND b.deletion_requested_at IS NULL
      AND b.desired_state <> $3
      AND ($3 = 'stopped' OR b.target_version IS NOT NULL)
    RETURNING p.*
), recorded AS (
    INSERT INTO events (project, generation, kind, reason, message, actor, token_id)
    SELECT name, generation, 'desired', $5, $6, $7, $8 FROM after
    RETURNING project
), woken AS (
    SELECT pg_notify('tether_desired', project) FROM recorded
)
SELECT to_jsonb(b) AS before,
       (SELECT to_jsonb(a) FROM after a) AS after,
       (SELECT count(*) FROM woken) AS woken
FROM before b;

-- name: next_version
SELECT coalesce(max(version), 0) + 1 FROM deployments WHERE project = $1;

-- name: insert_deployment
INSERT INTO deployments (
    project, version, image, command, env, port, health, ready_deadline_s, stop_grace_s,
    memory_mb, cpus, created_by, secret_env, strategy, drain_timeout_s, volumes
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
RETURNING *;

-- name: deployment
SELECT * FROM deployments WHERE project = $1 AND version = $2;

-- name: list_deployments
SELECT * FROM deployments WHERE project = $1 ORDER BY version;

-- name: latest_version
SELECT max(version) FROM deployments WHERE project = $1;

-- name: previous_version
SELECT max(version) FROM deployments WHERE project = $1 AND version < $2;

-- name: record_desired_change
-- The event and the operator's wake-up in one round trip.
WITH event AS (
    INSERT INTO events (project, generation, kind, reason, message, actor, token_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    RETURNING id
)
SELECT pg_notify('tether_desired', $1) FROM event;

-- name: list_events
SELECT * FROM events WHERE project = $1 AND id > $2 ORDER BY id LIMIT $3;

-- name: notify_status
SELECT pg_notify('tether_status', $1);

-- name: status
SELECT * FROM status WHERE project = $1;

-- name: list_status
SELECT s.* FROM status s JOIN projects p ON p.name = s.project
WHERE $1::text IS NULL OR p.owner = $1;

-- name: write_status
-- A pass's status, its events ($23..$25, in order; $22 their actor) and the watchers' NOTIFY, in one statement
-- (one round trip). Fenced: written only while $17 is the lease's epoch. The lease row stays
-- locked (FOR SHARE) until the statement's transaction ends, so no acquisition commits between
-- this check and the commit; the events and the notification depend on the status row being
-- written, so a fenced write leaves nothing. Returns the lease's epoch and whether it was
-- written. $17 NULL: unfenced (passes run by hand, in tests).
WITH lease AS (
    SELECT epoch FROM operator_lease WHERE name = 'operator' FOR SHARE
), written AS (
    INSERT INTO status (
        project, observed_generation, phase, conditions, running_version, container_id,
        ready_container_id, endpoint, attempts, next_attempt_at, last_error, crash_count,
        last_exit_code, last_crash_at, oom_killed, failed_version, updated_at, epoch, route,
        serving_version, serving_container_id, node
    )
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, now(),
           $17::bigint, $18, $19, $20, $21
    WHERE $17::bigint IS NULL OR $17::bigint = (SELECT epoch FROM lease)
    ON CONFLICT (project) DO UPDATE SET
        observed_generation = EXCLUDED.observed_generation,
        phase = EXCLUDED.phase,
        conditions = EXCLUDED.conditions,
        running_version = EXCLUDED.running_version,
        container_id = EXCLUDED.container_id,
        ready_container_id = EXCLUDED.ready_container_id,
        endpoint = EXCLUDED.endpoint,
        attempts = EXCLUDED.attempts,
        next_attempt_at = EXCLUDED.next_attempt_at,
        last_error = EXCLUDED.last_error,
        crash_count = EXCLUDED.crash_count,
        last_exit_code = EXCLUDED.last_exit_code,
        last_crash_at = EXCLUDED.last_crash_at,
        oom_killed = EXCLUDED.oom_killed,
        failed_version = EXCLUDED.failed_version,
        updated_at = now(),
        epoch = EXCLUDED.epoch,
        route = EXCLUDED.route,
        serving_version = EXCLUDED.serving_version,
        serving_container_id = EXCLUDED.serving_container_id,
        node = EXCLUDED.node
    RETURNING project
), logged AS (
    INSERT INTO events (project, generation, kind, reason, message, actor, epoch)
    SELECT $1, $2, e.kind, e.reason, e.message, $22, $17::bigint
    FROM unnest($23::text[], $24::text[], $25::text[])
         WITH ORDINALITY AS e (kind, reason, message, n)
    WHERE EXISTS (SELECT 1 FROM written)
    ORDER BY e.n
    RETURNING id
), notified AS (
    SELECT pg_notify('tether_status', project) FROM written
)
SELECT (SELECT epoch FROM lease) AS epoch,
       EXISTS (SELECT 1 FROM written) AS written,
       (SELECT count(*) FROM logged) AS events,
       (SELECT count(*) FROM notified) AS notified;

-- name: desired
-- The whole desired state of one project ($1), or of every project ($1 NULL), for reconcile passes:
-- the project, its target deployment, and the deployment it last ran Ready (the one a failed
-- rollout goes back to). The three as JSON text, which pydantic parses into models in one step:
-- decoding it first and validating the objects after took 1.6 times the CPU (the resync reads
-- every project every ~30 s; docs/benchmarks.md, idle).
SELECT p.*,
       to_jsonb(t)::text AS target,
       to_jsonb(r)::text AS running,
       to_jsonb(s)::text AS status
FROM projects p
LEFT JOIN deployments t ON t.project = p.name AND t.version = p.target_version
LEFT JOIN status s ON s.project = p.name
LEFT JOIN deployments r ON r.project = p.name AND r.version = s.running_version
WHERE $1::text IS NULL OR p.name = $1
ORDER BY p.name;

-- name: delete_project
-- Only a project whose deletion was asked for, at the generation the operator finished with, and
-- fenced like upsert_status by the epoch $3 (NULL: unfenced). Returns the lease's epoch and
-- whether the project was deleted.
WITH lease AS (
    SELECT epoch FROM operator_lease WHERE name = 'operator' FOR SHARE
), deleted AS (
    DELETE FROM projects
    WHERE name = $1 AND deletion_requested_at IS NOT NULL AND generation = $2
      AND ($3::bigint IS NULL OR $3::bigint = (SELECT epoch FROM lease))
    RETURNING name
)
SELECT (SELECT epoch FROM lease) AS epoch, EXISTS (SELECT 1 FROM deleted) AS deleted;

-- name: lease_lock
-- The operator lease's advisory lock, on the lease connection only (session-scoped: Postgres
-- releases it the moment that session ends). Waits at most the session's lock_timeout.
SELECT pg_advisory_lock(7272002);

-- name: lease_acquire
-- Under the advisory lock: the next epoch, this session's backend recorded, expiry on the DB clock.
WITH acquired AS (
    INSERT INTO operator_lease AS l (name, holder, expires_at, epoch, backend_pid, acquired_at)
    VALUES ('operator', $1, now() + make_interval(secs => $2), 1, pg_backend_pid(), now())
    ON CONFLICT (name) DO UPDATE
    SET holder = EXCLUDED.holder,
        expires_at = EXCLUDED.expires_at,
        epoch = l.epoch + 1,
        backend_pid = EXCLUDED.backend_pid,
        acquired_at = EXCLUDED.acquired_at
    RETURNING holder, epoch
)
SELECT epoch, pg_notify('tether_lease', holder || ' acquired ' || epoch) AS notified FROM acquired;

-- name: lease_renew
-- Extends the lease, only for the epoch that holds it: no row means it was lost.
UPDATE operator_lease SET expires_at = now() + make_interval(secs => $3)
WHERE name = 'operator' AND holder = $1 AND epoch = $2
RETURNING epoch;

-- name: lease_end_stale
-- A lease expired on the DB clock whose holder's session still holds the advisory lock (it hangs,
-- or was cut off without a close): end that session, so that the lock cannot outlive the lease.
-- Only the backend that holds the lock is ended, never one that reused a dead holder's pid.
SELECT pg_terminate_backend(l.backend_pid) AS ended
FROM operator_lease l
WHERE l.name = 'operator' AND l.expires_at < now() AND l.backend_pid <> pg_backend_pid()
  AND EXISTS (
      SELECT 1 FROM pg_locks k
      WHERE k.locktype = 'advisory' AND k.classid = 0 AND k.objid = 7272002 AND k.objsubid = 1
        AND k.granted AND k.pid = l.backend_pid
  );

-- name: lease_release
-- Ends the lease now (the epoch stays), and tells whoever listens; the caller then unlocks.
WITH released AS (
    UPDATE operator_lease SET expires_at = now()
    WHERE name = 'operator' AND holder = $1 AND epoch = $2
    RETURNING holder, epoch
)
SELECT pg_notify('tether_lease', holder || ' released ' || epoch) FROM released;

-- name: lease_unlock
SELECT pg_advisory_unlock(7272002);

-- name: lease
-- Who holds the operator lease, from which epoch, and until when (DB clock).
SELECT holder, epoch, expires_at, acquired_at, expires_at > now() AS live
FROM operator_lease WHERE name = 'operator';

-- name: watch_views
-- What watchers see of each project: desired state, status and the latest $3 events, oldest
-- first. $1: only these names (NULL: every project); $2: the owner the caller may see (NULL: an
-- admin).
SELECT p.*,
       to_jsonb(s) AS status,
       coalesce(
           (SELECT jsonb_agg(to_jsonb(e) ORDER BY e.id)
            FROM (SELECT * FROM events WHERE project = p.name ORDER BY id DESC LIMIT $3) e),
           '[]'::jsonb
       ) AS events
FROM projects p
LEFT JOIN status s ON s.project = p.name
WHERE ($1::text[] IS NULL OR p.name = ANY($1::text[])) AND ($2::text IS NULL OR p.owner = $2)
ORDER BY p.name;

-- name: request_volume_deletion
-- A destroy that asks for the project's volumes to go too (also after a destroy that kept them).
UPDATE projects SET delete_volumes = true WHERE name = $1;

-- name: record_volumes
-- What the operator observed of a project's volumes ($2: [{name, docker_name, mounted_by,
-- created_at}]), replacing what it recorded before; the size measured last is kept. Fenced like
-- upsert_status by the epoch $3 (NULL: unfenced).
WITH lease AS (
    SELECT epoch FROM operator_lease WHERE name = 'operator' FOR SHARE
), allowed AS (
    SELECT 1 WHERE $3::bigint IS NULL OR $3::bigint = (SELECT epoch FROM lease)
), seen AS (
    SELECT * FROM jsonb_to_recordset($2::jsonb)
        AS v(name text, docker_name text, mounted_by text[], created_at timestamptz)
), gone AS (
    DELETE FROM volumes
    WHERE project = $1 AND EXISTS (SELECT 1 FROM allowed)
      AND name NOT IN (SELECT name FROM seen)
)
INSERT INTO volumes (project, name, docker_name, mounted_by, created_at, observed_at, epoch)
SELECT $1, name, docker_name, mounted_by, created_at, now(), $3::bigint
FROM seen WHERE EXISTS (SELECT 1 FROM allowed) AND EXISTS (SELECT 1 FROM projects WHERE name = $1)
ON CONFLICT (project, name) DO UPDATE SET
    docker_name = EXCLUDED.docker_name,
    mounted_by = EXCLUDED.mounted_by,
    created_at = EXCLUDED.created_at,
    observed_at = now(),
    epoch = EXCLUDED.epoch;

-- name: record_volume_sizes
-- Sizes Docker measured ($1: [{docker_name, size_bytes}]), for every project's volumes.
UPDATE volumes v SET size_bytes = s.size_bytes
FROM jsonb_to_recordset($1::jsonb) AS s(docker_name text, size_bytes bigint)
WHERE v.docker_name = s.docker_name;

-- name: list_volumes
-- A project's volumes, and whether its target deployment mounts each.
SELECT v.name, v.docker_name, v.size_bytes, v.mounted_by, v.created_at, v.observed_at,
       coalesce(d.volumes @> jsonb_build_array(jsonb_build_object('name', v.name)), false)
           AS in_target
FROM volumes v
JOIN projects p ON p.name = v.project
LEFT JOIN deployments d ON d.project = p.name AND d.version = p.target_version
WHERE v.project = $1
ORDER BY v.name;

-- name: archive_target
-- What an export or import of volume $3 needs to know of project $1 ($2: the owner the caller
-- may see, NULL for an admin): whether it is stopped, the image to mount the volume in (the
-- target deployment's, else the latest), whether the volume is the project's, its last size.
SELECT p.owner, p.desired_state, p.generation, p.deletion_requested_at IS NOT NULL AS deleting,
       s.phase, s.observed_generation,
       (SELECT d.image FROM deployments d WHERE d.project = p.name
        ORDER BY d.version = p.target_version DESC, d.version DESC LIMIT 1) AS image,
       EXISTS (
           SELECT 1 FROM deployments d WHERE d.project = p.name
             AND d.volumes @> jsonb_build_array(jsonb_build_object('name', $3::text))
       ) AS known,
       (SELECT v.size_bytes FROM volumes v WHERE v.project = p.name AND v.name = $3) AS size_bytes
FROM projects p
LEFT JOIN status s ON s.project = p.name
WHERE p.name = $1 AND ($2::text IS NULL OR p.owner = $2);

-- Webhooks (api/webhooks.py). Their deliveries are written by triggers (migrations/0006).

-- name: create_webhook
INSERT INTO webhooks (owner, scope, url, events, secret) VALUES ($1, $2, $3, $4, $5)
RETURNING id, owner, scope IS NULL AS all_owners, url, events, created_at;

-- name: list_webhooks
-- $1: the owner whose hooks the caller may see (NULL: an admin, every hook).
SELECT id, owner, scope IS NULL AS all_owners, url, events, created_at
FROM webhooks WHERE $1::text IS NULL OR owner = $1 ORDER BY id;

-- name: webhook_visible
SELECT id FROM webhooks WHERE id = $1 AND ($2::text IS NULL OR owner = $2);

-- name: delete_webhook
-- Its deliveries go with it (nothing more is sent to it).
DELETE FROM webhooks WHERE id = $1 AND ($2::text IS NULL OR owner = $2) RETURNING id;

-- name: list_deliveries
-- A hook's latest $2 deliveries, newest first.
SELECT id, webhook, project, event_type, state, attempts,
       CASE WHEN state = 'pending' THEN next_attempt_at END AS next_attempt_at,
       last_attempt_at, last_status, last_answer, created_at, finished_at
FROM webhook_deliveries WHERE webhook = $1 ORDER BY id DESC LIMIT $2;

-- name: release_deliveries
-- A new tenure ($1, its epoch): attempts other epochs left in flight (their operator died or lost
-- the lease mid-delivery) are due again now, as retries.
UPDATE webhook_deliveries SET next_attempt_at = now(), claimed_epoch = NULL
WHERE state = 'pending' AND claimed_epoch IS NOT NULL AND claimed_epoch <> $1;

-- name: claim_deliveries
-- Up to $2 due deliveries, each the oldest pending one of its (hook, project): a later one waits
-- for it, in flight or not. Each is claimed for one attempt by epoch $1 until $3 seconds from now
-- (the attempt's bound): if its result is never written, it is due again then.
WITH due AS (
    SELECT d.id FROM webhook_deliveries d
    WHERE d.state = 'pending' AND d.next_attempt_at <= now()
      AND NOT EXISTS (
          SELECT 1 FROM webhook_deliveries e
          WHERE e.webhook = d.webhook AND e.project = d.project AND e.state = 'pending'
            AND e.id < d.id
      )
    ORDER BY d.id
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1,
    claimed_epoch = $1,
    last_attempt_at = now(),
    next_attempt_at = now() + make_interval(secs => $3)
FROM due, webhooks h
WHERE d.id = due.id AND h.id = d.webhook
RETURNING d.id, d.webhook, h.url, h.secret, d.payload, d.attempts AS attempt;

-- name: finish_attempt
-- An attempt's result ($3: delivered), only while epoch $2 still holds the claim. A failed one is
-- due again after $6 seconds, unless that would be more than $7 seconds after the delivery was
-- made: then it is given up (failed).
UPDATE webhook_deliveries
SET state = CASE
        WHEN $3::boolean THEN 'delivered'
        WHEN now() + make_interval(secs => $6) > created_at + make_interval(secs => $7)
            THEN 'failed'
        ELSE 'pending'
    END,
    last_status = $4,
    last_answer = $5,
    claimed_epoch = NULL,
    next_attempt_at = now() + make_interval(secs => $6),
    finished_at = CASE
        WHEN $3::boolean
          OR now() + make_interval(secs => $6) > created_at + make_interval(secs => $7)
            THEN now()
    END
WHERE id = $1 AND claimed_epoch = $2 AND state = 'pending'
RETURNING state;

-- name: prune_deliveries
DELETE FROM webhook_deliveries
WHERE state <> 'pending' AND finished_at < now() - make_interval(secs => $1);

-- name: next_delivery_due
-- Seconds until the next delivery that could be claimed is due (negative: overdue; NULL: none).
SELECT extract(epoch FROM min(d.next_attempt_at) - now())::float8
FROM webhook_deliveries d
WHERE d.state = 'pending'
  AND NOT EXISTS (
      SELECT 1 FROM webhook_deliveries e
      WHERE e.webhook = d.webhook AND e.project = d.project AND e.state = 'pending'
        AND e.id < d.id
  );

-- name: replace_nodes
-- The cluster's nodes as one list ($1: a JSON array) replaces what was recorded, fenced like
-- upsert_status by the epoch $2 (NULL: unfenced). Returns whether it was written.
WITH lease AS (
    SELECT epoch FROM operator_lease WHERE name = 'operator' FOR SHARE
), allowed AS (
    SELECT $2::bigint IS NULL OR $2::bigint = (SELECT epoch FROM lease) AS ok
), gone AS (
    DELETE FROM nodes
    WHERE (SELECT ok FROM allowed)
      AND id NOT IN (SELECT n->>'id' FROM jsonb_array_elements($1::jsonb) n)
), written AS (
    INSERT INTO nodes (id, hostname, address, state, availability, role, seen_at)
    SELECT n->>'id', n->>'hostname', n->>'address', n->>'state', n->>'availability',
           n->>'role', now()
    FROM jsonb_array_elements($1::jsonb) n
    WHERE (SELECT ok FROM allowed)
    ON CONFLICT (id) DO UPDATE SET
        hostname = EXCLUDED.hostname,
        address = EXCLUDED.address,
        state = EXCLUDED.state,
        availability = EXCLUDED.availability,
        role = EXCLUDED.role,
        seen_at = EXCLUDED.seen_at
)
SELECT (SELECT ok FROM allowed) AS written, (SELECT epoch FROM lease) AS epoch;

-- name: list_nodes
SELECT * FROM nodes ORDER BY hostname, id;
