"""The HTTP API: the desired-state contract over HTTP, under /v1, with OpenAPI at /openapi.json.

Every write is idempotent and answers what is desired now and whether the request changed it; no
answer is ever 409 because a project is already in the asked state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from http import HTTPStatus
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.api import console, migrator, probes, sse, watch
from tether.api import logs as project_logs
from tether.api.errors import (
    LogsUnavailable,
    RateLimited,
    StoreUnavailable,
    TetherError,
    Unauthorized,
)
from tether.api.logs import LogSource
from tether.api.metrics import RequestMetrics
from tether.api.models import (
    MAX_BIGINT,
    MAX_INT,
    PROJECT_NAME_PATTERN,
    Deployment,
    DeploymentSpec,
    DesiredState,
    Event,
    Principal,
    ProjectCreate,
    ProjectView,
    Status,
    WriteResult,
)
from tether.api.ratelimit import FailureLimiter
from tether.api.store import Store

log = structlog.get_logger("tether.api")
NamePath = Annotated[str, Path(pattern=PROJECT_NAME_PATTERN, description="The project name.")]


class ErrorBody(BaseModel):
    error: str
    message: str
    hint: str | None = None


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_version: int | None = Field(
        default=None, ge=1, le=MAX_INT, description="Default: the previous one."
    )


class DeployResult(WriteResult):
    deployment: Deployment


def _error(
    status: int,
    error: str,
    message: str,
    hint: str | None = None,
    *,
    retry_after_s: int | None = None,
) -> JSONResponse:
    body = ErrorBody(error=error, message=message, hint=hint).model_dump(exclude_none=True)
    if retry_after_s is None and status == 503:
        retry_after_s = 2
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return JSONResponse(body, status_code=status, headers=headers)


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, whether or not they declare a length."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        # Read the whole body (at most `limit` bytes) before the app sees any of it: a body sent
        # without a length (chunked) is refused as soon as it passes the limit. Raising from a
        # wrapped `receive` instead would not work: FastAPI turns any error while reading the
        # body into a 400 "error parsing the body".
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: there is nobody to answer
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = _error(
            413,
            "body_too_large",
            f"the request body is larger than {self.limit} bytes",
            hint="send a smaller deployment spec (environment values are limited to 32 KiB each)",
        )
        await response(scope, receive, send)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _if_match(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not (text.isascii() and text.isdigit()):  # isdigit() alone takes '²', int() does not
        raise TetherError(
            f"If-Match must be a project generation (a whole number), not {value!r}",
            hint="use the `generation` of the project as read from the API",
        )
    return int(text)


# What `_if_match` takes: a generation, optionally quoted as an ETag, weak or not.
IF_MATCH_PATTERN = r'^[ \t]*(W/)?"*[0-9]+"*[ \t]*$'
IfMatch = Annotated[
    str | None,
    # Documented as what it takes; checked by `_if_match`, which says what is wrong (400).
    WithJsonSchema({"type": "string", "pattern": IF_MATCH_PATTERN, "examples": ['"3"']}),
    Header(alias="If-Match", description="Refuse the write (412) unless at this generation."),
]


BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token (`tether token create --owner NAME`) in `Authorization: Bearer "
    "<token>`, and nowhere else.",
)


async def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Principal:
    """The caller, from `Authorization: Bearer <token>`: the only place a token is read from (a
    token in the query string or a cookie ends up in logs, histories and caches; it is ignored).

    A client address with too many failed authentications is refused (429) before its token is
    looked at (`tether.api.ratelimit`); successful ones are never limited."""
    limiter: FailureLimiter | None = request.app.state.auth_limiter
    address = request.client.host if request.client else "unknown"
    if limiter is not None:
        wait = limiter.retry_after(address)
        if wait is not None:
            raise RateLimited(
                f"too many failed authentications from {address}; try again in {wait} s",
                hint="check the token: `tether login`, or TETHER_TOKEN",
                retry_after_s=wait,
            )
    token = credentials.credentials.strip() if credentials is not None else ""
    if not token:
        raise Unauthorized(
            "missing API token",
            hint="send 'Authorization: Bearer <token>' (tokens are read from that header only); "
            "create one with `tether token create --owner NAME`",
        )
    store: Store = request.app.state.store
    found = await store.authenticate(token)
    if found is None:
        if limiter is not None:
            limiter.failed(address)
            if limiter.retry_after(address) is not None:
                log.warning(
                    "failed authentications: client refused for a while",
                    client=address,
                    burst=limiter.burst,
                    window_s=limiter.window_s,
                )
        raise Unauthorized(
            "the API token is not valid", hint="create a new one with `tether token create`"
        )
    return found


# Module level on purpose: with postponed annotations FastAPI resolves a route's annotations in
# the module's globals, so an alias local to create_app would silently become a query parameter.
Caller = Annotated[Principal, Depends(_principal)]


ERROR_MEANINGS = {
    400: "The request cannot be carried out as it is (see `error`).",
    401: "No valid token in the Authorization header.",
    404: "No such project or deployment (or one the token may not see).",
    409: "The project name belongs to another owner.",
    412: "If-Match names another generation: nothing was changed.",
    413: "The request body is too large.",
    422: "The request is not valid.",
    429: "Too many failed authentications from this address: see Retry-After.",
    503: "A dependency (the database, Docker) is unavailable, or the server is stopping.",
}


def errors(*codes: int) -> dict[int | str, dict[str, object]]:
    """The error answers a /v1 route can give: those of every route (no valid token, too many
    failures, a body over the limit, a validation error, the database down) and `codes`."""
    every = (401, 413, 422, 429, 503)
    return {
        code: {"model": ErrorBody, "description": ERROR_MEANINGS[code]}
        for code in sorted({*every, *codes})
    }


WRITE_ERRORS = errors(400, 404, 412)
READ_ERRORS = errors(404)


STREAM_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {sse.MEDIA_TYPE: {}}, "description": "Server-sent events."},
    **errors(404),
}


def _events_stream(chunks: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(chunks, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)


def create_app(
    store: Store,
    *,
    max_body_bytes: int = 1024 * 1024,
    log_source: LogSource | None = None,
    keepalive_s: float = 15.0,
    auth_limiter: FailureLimiter | None = None,
    readiness: Sequence[probes.ReadinessCheck] = (),
) -> FastAPI:
    """Build the API around a connected store. The caller owns the store's lifetime, and calls
    `app.state.watches.shutdown()` when stopping, which ends the open watch streams.

    `log_source` reads container output (the operator's Docker driver); without one the logs
    route answers 503. Streams send a keep-alive comment after `keepalive_s` of silence.
    `auth_limiter` limits failed authentications per client address (the servers always pass
    one; without it, nothing is limited). `/readyz` checks the database and its migrations, and
    whatever else `readiness` checks (the operator's, when it runs in the same process)."""

    app = FastAPI(
        title="tether",
        version="1",
        description="Desired state of Docker-hosted projects.",
    )
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(RequestMetrics, routes=lambda: app.router.routes)

    @app.exception_handler(TetherError)
    async def tether_error(_request: Request, exc: TetherError) -> JSONResponse:
        retry_after_s = exc.retry_after_s if isinstance(exc, RateLimited) else None
        return _error(
            exc.status_code, exc.error, exc.message, exc.hint, retry_after_s=retry_after_s
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes and methods: the same JSON shape as every other error.
        try:
            code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        except ValueError:
            code = "http_error"
        response = _error(
            exc.status_code, code, f"{exc.detail}: {request.method} {request.url.path}"
        )
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(
            422,
            "invalid_request",
            _validation_message(exc),
            hint="see the API schema at /docs for the expected fields",
        )

    app.state.store = store
    app.state.auth_limiter = auth_limiter
    hub = watch.WatchHub(store)
    app.state.watches = hub
    v1 = APIRouter(prefix="/v1")

    @v1.post(
        "/projects",
        response_model=WriteResult,
        status_code=201,
        responses={
            200: {"model": WriteResult, "description": "It existed already: nothing changed."},
            **errors(400, 409),
        },
    )
    async def create_project(
        body: ProjectCreate, caller: Caller, response: Response
    ) -> WriteResult:
        result = await store.create_project(body.name, caller)
        if not result.changed:
            response.status_code = 200
        return result

    @v1.get("/projects", response_model=list[ProjectView], responses=errors())
    async def list_projects(caller: Caller) -> list[ProjectView]:
        return await store.list_projects(caller)

    @v1.get("/projects/{name}", response_model=ProjectView, responses=READ_ERRORS)
    async def get_project(name: NamePath, caller: Caller, response: Response) -> ProjectView:
        view = await store.get_project(name, caller)
        response.headers["ETag"] = f'"{view.project.generation}"'
        return view

    @v1.delete(
        "/projects/{name}", response_model=WriteResult, status_code=202, responses=WRITE_ERRORS
    )
    async def destroy(name: NamePath, caller: Caller, if_match: IfMatch = None) -> WriteResult:
        return await store.destroy(name, caller, if_match=_if_match(if_match))

    @v1.post(
        "/projects/{name}/deployments",
        response_model=DeployResult,
        status_code=201,
        responses=WRITE_ERRORS,
    )
    async def deploy(
        name: NamePath,
        spec: DeploymentSpec,
        caller: Caller,
        start: Annotated[bool, Query(description="Also want the project running.")] = True,
        if_match: IfMatch = None,
    ) -> DeployResult:
        result, deployment = await store.deploy(
            name, spec, caller, start=start, if_match=_if_match(if_match)
        )
        return DeployResult(**result.model_dump(), deployment=deployment.masked())

    @v1.get("/projects/{name}/deployments", response_model=list[Deployment], responses=READ_ERRORS)
    async def deployments(name: NamePath, caller: Caller) -> list[Deployment]:
        return [d.masked() for d in await store.deployments(name, caller)]

    @v1.get(
        "/projects/{name}/deployments/{version}",
        response_model=Deployment,
        responses=READ_ERRORS,
    )
    async def deployment(
        name: NamePath, version: Annotated[int, Path(ge=1, le=MAX_INT)], caller: Caller
    ) -> Deployment:
        return (await store.deployment(name, version, caller)).masked()

    @v1.post("/projects/{name}/start", response_model=WriteResult, responses=WRITE_ERRORS)
    async def start(name: NamePath, caller: Caller, if_match: IfMatch = None) -> WriteResult:
        return await store.set_desired_state(
            name, DesiredState.RUNNING, caller, if_match=_if_match(if_match)
        )

    @v1.post("/projects/{name}/stop", response_model=WriteResult, responses=WRITE_ERRORS)
    async def stop(name: NamePath, caller: Caller, if_match: IfMatch = None) -> WriteResult:
        return await store.set_desired_state(
            name, DesiredState.STOPPED, caller, if_match=_if_match(if_match)
        )

    @v1.post("/projects/{name}/restart", response_model=WriteResult, responses=WRITE_ERRORS)
    async def restart(name: NamePath, caller: Caller, if_match: IfMatch = None) -> WriteResult:
        return await store.restart(name, caller, if_match=_if_match(if_match))

    @v1.post("/projects/{name}/rollback", response_model=WriteResult, responses=WRITE_ERRORS)
    async def rollback(
        name: NamePath,
        caller: Caller,
        body: RollbackRequest | None = None,
        if_match: IfMatch = None,
    ) -> WriteResult:
        return await store.rollback(
            name,
            caller,
            to_version=body.to_version if body else None,
            if_match=_if_match(if_match),
        )

    @v1.get("/projects/{name}/status", response_model=Status, responses=READ_ERRORS)
    async def status(name: NamePath, caller: Caller) -> Status:
        view = await store.get_project(name, caller)
        return view.status or Status(project=name, phase="Pending")

    @v1.get("/projects/{name}/events", response_model=list[Event], responses=READ_ERRORS)
    async def events(
        name: NamePath,
        caller: Caller,
        after: Annotated[
            int, Query(ge=0, le=MAX_BIGINT, description="Only events with a larger id.")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[Event]:
        return await store.events(name, caller, after=after, limit=limit)

    @v1.get(
        "/projects/{name}/watch",
        response_class=StreamingResponse,
        responses=STREAM_RESPONSES,
        summary="Watch one project (server-sent events)",
    )
    async def watch_project(name: NamePath, caller: Caller) -> StreamingResponse:
        """`view` events (the project, its status and latest events) at once and on every
        change; `deleted` when the project is gone, which ends the stream; `error` when the
        server cannot go on (reconnect); `: keep-alive` comments while nothing changes."""
        hub.check_open()
        await store.get_project(name, caller)  # 404 (or 503) before the stream starts
        return _events_stream(watch.stream(hub, store, caller, name, keepalive_s=keepalive_s))

    @v1.get(
        "/watch",
        response_class=StreamingResponse,
        responses=STREAM_RESPONSES,
        summary="Watch every project you can see (server-sent events)",
    )
    async def watch_all(caller: Caller) -> StreamingResponse:
        """Like the one-project watch, for every project the token sees: `view` events,
        `deleted` for a project that is gone, and `synced` once every project has been sent."""
        hub.check_open()
        return _events_stream(watch.stream(hub, store, caller, None, keepalive_s=keepalive_s))

    @v1.get(
        "/projects/{name}/logs",
        response_class=StreamingResponse,
        responses=STREAM_RESPONSES,
        summary="The project's container output (server-sent events)",
    )
    async def logs(
        name: NamePath,
        caller: Caller,
        follow: Annotated[
            bool, Query(description="Keep streaming, across container replacements.")
        ] = False,
        tail: Annotated[
            int | None, Query(ge=0, description="At most this many lines from the end.")
        ] = None,
        since: Annotated[datetime | None, Query(description="Only lines from then on.")] = None,
    ) -> StreamingResponse:
        """`container` when a container's output starts (each new one when following), `log`
        per line (`stream` is stdout or stderr), `error` when Docker fails."""
        await store.get_project(name, caller)
        if log_source is None:
            raise LogsUnavailable(
                "this API server cannot read container output: it was started without Docker "
                "access",
                hint="run the API with `tether api` or `tether up`, which read TETHER_DOCKER_URL",
            )
        chunks = project_logs.stream(log_source, name, follow=follow, tail=tail, since=since)
        return _events_stream(sse.with_keepalive(chunks, keepalive_s))

    app.include_router(v1)
    console.install(app, store, _principal)  # the web console at `/` (docs/console.md)

    migrations_current = False  # once current, they stay so for the life of this process

    async def database(checks: probes.Checks) -> None:
        nonlocal migrations_current
        try:
            await probes.bounded(store.ping())
        except (StoreUnavailable, TimeoutError) as exc:
            cause = exc.__cause__ if isinstance(exc, StoreUnavailable) else exc
            checks.failed("database", f"unreachable ({type(cause).__name__})")
            checks.failed("migrations", "not checked: the database is unreachable")
            return
        checks.passed("database")
        if not migrations_current:
            try:
                missing = await probes.bounded(migrator.pending(store.dsn))
            except Exception as exc:  # any failure to read them: not ready, and say why
                checks.failed("migrations", f"cannot read them ({type(exc).__name__})")
                return
            if missing:
                names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
                checks.failed("migrations", f"{names} pending: run `tether migrate`")
                return
            migrations_current = True
        checks.passed("migrations")

    checks = [database, *readiness]

    @app.get("/healthz", response_model=probes.Health, tags=["health"])
    async def healthz() -> probes.Health:
        """The API process answers (nothing it depends on is checked)."""
        return probes.Health()

    @app.get(
        "/readyz",
        response_class=JSONResponse,
        responses=probes.READINESS_RESPONSES,
        tags=["health"],
    )
    async def readyz() -> JSONResponse:
        """Ready to serve: the database answers and its migrations are current (and, under
        `tether up`, the operator's Docker connection and triggers are alive)."""
        return probes.readiness_response(await probes.evaluate(checks))

    @app.get(
        "/metrics",
        response_class=Response,
        responses=probes.METRICS_RESPONSES,
        tags=["health"],
    )
    async def metrics() -> Response:
        """This process's Prometheus metrics (under `tether up`, the operator's too)."""
        return probes.metrics_response()

    return app
