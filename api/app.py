"""The HTTP API: the desired-state contract over HTTP, under /v1, with OpenAPI at /openapi.json.

Every write is idempotent and answers what is desired now and whether the request changed it; no
answer is ever 409 because a project is already in the asked state.

This module only assembles the app: its state (`appstate`), middleware (`bodylimit`,
`requestrecord`), error answers (`error_responses`) and routes (`routes/`, one module per
resource).
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI

from tether.api import console, probes
from tether.api.appstate import Streams, set_state
from tether.api.archives import VolumeArchives
from tether.api.auth import principal_of
from tether.api.bodylimit import BodyLimit
from tether.api.console.sessions import SESSION_TTL_S
from tether.api.error_responses import add_error_handlers
from tether.api.logs import LogSource
from tether.api.ratelimit import FailureLimiter
from tether.api.readiness import DatabaseReadiness
from tether.api.requestrecord import RequestRecord
from tether.api.routes import (
    deployments,
    events,
    health,
    lifecycle,
    logs,
    nodes,
    projects,
    volumes,
    watch,
    webhooks,
)
from tether.api.routes.leanwrite import LeanDispatch, LeanWriteRoute
from tether.api.store import Store

V1_ROUTERS = (projects, deployments, lifecycle, events, watch, logs, volumes, webhooks, nodes)


def create_app(
    store: Store,
    *,
    max_body_bytes: int = 1024 * 1024,
    log_source: LogSource | None = None,
    archives: VolumeArchives | None = None,
    archive_limit: int = 1024**3,
    keepalive_s: float = 15.0,
    auth_limiter: FailureLimiter | None = None,
    readiness: Sequence[probes.ReadinessCheck] = (),
    session_ttl_s: float = SESSION_TTL_S,
) -> FastAPI:
    """Build the API around a connected store. The caller owns the store's lifetime, and calls
    `app.state.watches.shutdown()` when stopping, which ends the open watch streams.

    `log_source` reads container output (the operator's Docker driver); without one the logs
    route answers 503; `archives` reads and writes volumes (without it, their routes answer 503),
    `archive_limit` bytes at most. Streams send a keep-alive comment after `keepalive_s` of silence.
    `auth_limiter` limits failed authentications per client address (the servers always pass
    one; without it, nothing is limited). `/readyz` checks the database and its migrations, and
    whatever else `readiness` checks (the operator's, when it runs in the same process). A console
    session ends `session_ttl_s` after sign-in."""
    app = FastAPI(
        title="tether",
        version="1",
        description="Desired state of Docker-hosted projects.",
    )
    lean = [r for r in lifecycle.router.routes if isinstance(r, LeanWriteRoute)]
    app.add_middleware(LeanDispatch, routes=lean)
    # Volume imports stream their (larger) bodies to their route, which limits them itself.
    app.add_middleware(BodyLimit, limit=max_body_bytes, streamed=volumes.ARCHIVE_PATH)
    app.add_middleware(RequestRecord, routes=lambda: app.router.routes)
    add_error_handlers(app)
    set_state(
        app,
        store,
        streams=Streams(
            log_source=log_source,
            keepalive_s=keepalive_s,
            archives=archives,
            archive_limit=archive_limit,
        ),
        auth_limiter=auth_limiter,
        readiness=[DatabaseReadiness(store), *readiness],
    )
    for module in V1_ROUTERS:
        app.include_router(module.router)
    app.include_router(health.router)
    console.install(
        app, store, principal_of, session_ttl_s=session_ttl_s
    )  # the web console at `/` (docs/console.md)
    return app
