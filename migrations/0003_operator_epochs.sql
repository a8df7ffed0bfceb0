-- High availability: each acquisition of the operator lease has a rising epoch (a fencing token).
-- The lease row is never deleted again (its epoch must never go back): a release only ends it.
-- `backend_pid` is the Postgres backend whose session holds the lease's advisory lock, so that a
-- standby can end that session once the lease has expired (a holder that hangs or was cut off).
ALTER TABLE operator_lease
    ADD COLUMN epoch        bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    ADD COLUMN backend_pid  integer,
    ADD COLUMN acquired_at  timestamptz;

-- Which epoch wrote each status row and each operator event (NULL: a desired change, or a
-- write from before epochs).
ALTER TABLE status ADD COLUMN epoch bigint;
ALTER TABLE events ADD COLUMN epoch bigint;
