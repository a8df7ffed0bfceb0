"""The desired-state contract: models, the Postgres store, the HTTP API and its auth."""
