-- Deployment env values can be marked secret: the keys listed here are passed to the container as
-- given, and masked in every answer of the API. Only keys of the deployment's own env.

ALTER TABLE deployments
    ADD COLUMN secret_env text[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT deployments_secret_env_in_env CHECK (env ?& secret_env);
