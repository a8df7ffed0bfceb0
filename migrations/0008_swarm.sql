-- The swarm runtime: the node a project's task runs on, and the cluster's nodes as the operator
-- last listed them (the API and the CLI have no Docker socket of their own: they read these).

ALTER TABLE status ADD COLUMN node text;

CREATE TABLE nodes (
    id           text PRIMARY KEY,
    hostname     text NOT NULL,
    address      text NOT NULL,
    state        text NOT NULL,
    availability text NOT NULL,
    role         text NOT NULL,
    seen_at      timestamptz NOT NULL DEFAULT now()
);
