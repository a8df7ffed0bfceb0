"""The logs route: a project's container output as server-sent events, optionally followed."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from tether.api import logs as project_logs
from tether.api import sse
from tether.api.appstate import StoreDep, StreamsDep
from tether.api.auth import Caller
from tether.api.errors import LogsUnavailable
from tether.api.routes import V1
from tether.api.routes.params import NamePath
from tether.api.routes.responses import STREAM_RESPONSES, events_stream

router = APIRouter(prefix=V1)


@router.get(
    "/projects/{name}/logs",
    response_class=StreamingResponse,
    responses=STREAM_RESPONSES,
    summary="The project's container output (server-sent events)",
)
async def logs(
    name: NamePath,
    caller: Caller,
    store: StoreDep,
    streams: StreamsDep,
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
    if streams.log_source is None:
        raise LogsUnavailable(
            "this API server cannot read container output: it was started without Docker access",
            hint="run the API with `tether api` or `tether up`, which read TETHER_DOCKER_URL",
        )
    chunks = project_logs.stream(streams.log_source, name, follow=follow, tail=tail, since=since)
    return events_stream(sse.with_keepalive(chunks, streams.keepalive_s))
