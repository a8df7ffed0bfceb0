-- Named volumes: a deployment names the project's volumes it mounts; the operator, which alone
-- talks to Docker, records what it observes of them (the API may have no Docker access); a
-- destroy may ask for the volumes to be removed too.

ALTER TABLE deployments
    ADD COLUMN volumes jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(volumes) = 'array');

ALTER TABLE projects
    ADD COLUMN delete_volumes boolean NOT NULL DEFAULT false;

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
