"""The watch routes: one project's changes, or every visible project's, as server-sent events."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from tether.api import watch
from tether.api.appstate import StoreDep, StreamsDep, WatchesDep
from tether.api.auth import Caller
from tether.api.routes import V1
from tether.api.routes.params import NamePath
from tether.api.routes.responses import STREAM_RESPONSES, events_stream

router = APIRouter(prefix=V1)


@router.get(
    "/projects/{name}/watch",
    response_class=StreamingResponse,
    responses=STREAM_RESPONSES,
    summary="Watch one project (server-sent events)",
)
async def watch_project(
    name: NamePath, caller: Caller, store: StoreDep, hub: WatchesDep, streams: StreamsDep
) -> StreamingResponse:
    """`view` events (the project, its status and latest events) at once and on every
    change; `deleted` when the project is gone, which ends the stream; `error` when the
    server cannot go on (reconnect); `: keep-alive` comments while nothing changes."""
    hub.check_open()
    await store.get_project(name, caller)  # 404 (or 503) before the stream starts
    chunks = watch.stream(hub, store, caller, name, keepalive_s=streams.keepalive_s)
    return events_stream(chunks)


@router.get(
    "/watch",
    response_class=StreamingResponse,
    responses=STREAM_RESPONSES,
    summary="Watch every project you can see (server-sent events)",
)
async def watch_all(
    caller: Caller, store: StoreDep, hub: WatchesDep, streams: StreamsDep
) -> StreamingResponse:
    """Like the one-project watch, for every project the token sees: `view` events,
    `deleted` for a project that is gone, and `synced` once every project has been sent."""
    hub.check_open()
    chunks = watch.stream(hub, store, caller, None, keepalive_s=streams.keepalive_s)
    return events_stream(chunks)
