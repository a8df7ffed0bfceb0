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

-- name: next_version
SELECT coalesce(max(version), 0) + 1 FROM deployments WHERE project = $1;

-- name: insert_deployment
INSERT INTO deployments (
    project, version, image, command, env, port, health, ready_deadline_s, stop_grace_s,
    memory_mb, cpus, created_by, secret_env, strategy, drain_timeout_s
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
RETURNING *;

-- name: deployment
SELECT * FROM deployments WHERE project = $1 AND version = $2;

-- name: list_deployments
SELECT * FROM deployments WHERE project = $1 ORDER BY version;

-- name: latest_version
SELECT max(version) FROM deployments WHERE project = $1;

-- name: previous_version
SELECT max(version) FROM deployments WHERE project = $1 AND version < $2;

-- name: insert_event
-- An operator's event, after upsert_status in the same transaction (which fenced it).
INSERT INTO events (project, generation, kind, reason, message, actor, epoch)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id;

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

-- name: upsert_status
-- Fenced: written only while $17 is the lease's epoch. The lease row stays locked (FOR SHARE)
-- until the transaction ends, so no acquisition commits between this check and the commit; the
-- events written after it in the same transaction are covered too. Returns the lease's epoch and
-- whether the row was written. $17 NULL: unfenced (passes run by hand, in tests).
WITH lease AS (
    SELECT epoch FROM operator_lease WHERE name = 'operator' FOR SHARE
), written AS (
    INSERT INTO status (
        project, observed_generation, phase, conditions, running_version, container_id,
        ready_container_id, endpoint, attempts, next_attempt_at, last_error, crash_count,
        last_exit_code, last_crash_at, oom_killed, failed_version, updated_at, epoch, route,
        serving_version, serving_container_id
    )
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, now(),
           $17::bigint, $18, $19, $20
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
        serving_container_id = EXCLUDED.serving_container_id
    RETURNING project
)
SELECT (SELECT epoch FROM lease) AS epoch, EXISTS (SELECT 1 FROM written) AS written;

-- name: desired
-- The whole desired state of one project ($1), or of every project ($1 NULL), for reconcile passes:
-- the project, its target deployment, and the deployment it last ran Ready (the one a failed
-- rollout goes back to).
SELECT p.*,
       to_jsonb(t) AS target,
       to_jsonb(r) AS running,
       to_jsonb(s) AS status
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
