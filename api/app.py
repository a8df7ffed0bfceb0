"""The HTTP API: the desired-state contract over HTTP, under /v1, with OpenAPI at /openapi.json.

Every write is idempotent and answers what is desired now and whether the request changed it; no
answer is ever 409 because a project is already in the asked state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.api import logs as project_logs
from tether.api import sse, watch
from tether.api.errors import LogsUnavailable, TetherError, Unauthorized
from tether.api.logs import LogSource
from tether.api.models import (
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
from tether.api.store import Store

NamePath = Annotated[str, Path(pattern=PROJECT_NAME_PATTERN, description="The project name.")]


class ErrorBody(BaseModel):
    error: str
    message: str
    hint: str | None = None


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_version: int | None = Field(default=None, ge=1, description="Default: the previous one.")


class DeployResult(WriteResult):
    deployment: Deployment


def _error(status: int, error: str, message: str, hint: str | None = None) -> JSONResponse:
    body = ErrorBody(error=error, message=message, hint=hint).model_dump(exclude_none=True)
    headers = {"Retry-After": "2"} if status == 503 else None
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


IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", description="Refuse the write (412) unless at this generation."),
]


async def _principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "missing API token",
            hint="send 'Authorization: Bearer <token>'; create one with "
            "`tether token create --owner NAME`",
        )
    store: Store = request.app.state.store
    found = await store.authenticate(token.strip())
    if found is None:
        raise Unauthorized(
            "the API token is not valid", hint="create a new one with `tether token create`"
        )
    return found


# Module level on purpose: with postponed annotations FastAPI resolves a route's annotations in
# the module's globals, so an alias local to create_app would silently become a query parameter.
Caller = Annotated[Principal, Depends(_principal)]


STREAM_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {sse.MEDIA_TYPE: {}}, "description": "Server-sent events."}
}


def _events_stream(chunks: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(chunks, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)


def create_app(
    store: Store,
    *,
    max_body_bytes: int = 1024 * 1024,
    log_source: LogSource | None = None,
    keepalive_s: float = 15.0,
) -> FastAPI:
    """Build the API around a connected store. The caller owns the store's lifetime, and calls
    `app.state.watches.shutdown()` when stopping, which ends the open watch streams.

    `log_source` reads container output (the operator's Docker driver); without one the logs
    route answers 503. Streams send a keep-alive comment after `keepalive_s` of silence."""

    app = FastAPI(
        title="tether",
        version="1",
        description="Desired state of Docker-hosted projects.",
        responses={
            401: {"model": ErrorBody},
            404: {"model": ErrorBody},
            412: {"model": ErrorBody},
            413: {"model": ErrorBody},
            422: {"model": ErrorBody},
            503: {"model": ErrorBody},
        },
    )
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    @app.exception_handler(TetherError)
    async def tether_error(_request: Request, exc: TetherError) -> JSONResponse:
        return _error(exc.status_code, exc.error, exc.message, exc.hint)

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
    hub = watch.WatchHub(store)
    app.state.watches = hub
    v1 = APIRouter(prefix="/v1")

    @v1.post("/projects", response_model=WriteResult, status_code=201)
    async def create_project(
        body: ProjectCreate, caller: Caller, response: Response
    ) -> WriteResult:
        result = await store.create_project(body.name, caller)
        if not result.changed:
            response.status_code = 200
        return result

    @v1.get("/projects", response_model=list[ProjectView])
    async def list_projects(caller: Caller) -> list[ProjectView]:
        return await store.list_projects(caller)

    @v1.get("/projects/{name}", response_model=ProjectView)
    async def get_project(name: NamePath, caller: Caller, response: Response) -> ProjectView:
        view = await store.get_project(name, caller)
        response.headers["ETag"] = f'"{view.project.generation}"'
        return view

    @v1.delete("/projects/{name}", response_model=WriteResult, status_code=202)
    async def destroy(name: NamePath, caller: Caller, if_match: IfMatch = None) -> WriteResult:
        return await store.destroy(name, caller, if_match=_if_match(if_match))

    @v1.post("/projects/{name}/deployments", response_model=DeployResult, status_code=201)
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
        return DeployResult(**result.model_dump(), deployment=deployment)

    @v1.get("/projects/{name}/deployments", response_model=list[Deployment])
    async def deployments(name: NamePath, caller: Caller) -> list[Deployment]:
        return await store.deployments(name, caller)

    @v1.get("/projects/{name}/deployments/{version}", response_model=Deployment)
    async def deployment(
        name: NamePath, version: Annotated[int, Path(ge=1)], caller: Caller
    ) -> Deployment:
        return await store.deployment(name, version, caller)

    @v1.post("/projects/{name}/start", response_model=WriteResult)
    async def start(name: NamePath, caller: Caller, if_match: IfMatch = None) -> WriteResult:
        return await store.set_desired_state(
            name, DesiredState.RUNNING, caller, if_match=_if_match(if_match)
        )

    @v1.post("/projects/{name}/stop", response_model=WriteResult)
    async def stop(name: NamePath, caller: Caller, if_match: IfMatch = None) -> WriteResult:
        return await store.set_desired_state(
            name, DesiredState.STOPPED, caller, if_match=_if_match(if_match)
        )

    @v1.post("/projects/{name}/restart", response_model=WriteResult)
    async def restart(name: NamePath, caller: Caller, if_match: IfMatch = None) -> WriteResult:
        return await store.restart(name, caller, if_match=_if_match(if_match))

    @v1.post("/projects/{name}/rollback", response_model=WriteResult)
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

    @v1.get("/projects/{name}/status", response_model=Status)
    async def status(name: NamePath, caller: Caller) -> Status:
        view = await store.get_project(name, caller)
        return view.status or Status(project=name, phase="Pending")

    @v1.get("/projects/{name}/events", response_model=list[Event])
    async def events(
        name: NamePath,
        caller: Caller,
        after: Annotated[int, Query(ge=0, description="Only events with a larger id.")] = 0,
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

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        await store.ping()
        return {"status": "ready"}

    return app
