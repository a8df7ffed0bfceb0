"""The logs route: a project's container output as server-sent events, optionally followed."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator

from tether.api import logs as project_logs
from tether.api import sse
from tether.api.appstate import StoreDep, StreamsDep
from tether.api.auth import Caller
from tether.api.errors import LogsUnavailable
from tether.api.routes import V1
from tether.api.routes.params import NamePath
from tether.api.routes.responses import STREAM_RESPONSES, events_stream

router = APIRouter(prefix=V1)
# A date and time as the schema's `format: date-time` says (RFC 3339), and nothing else: pydantic
# would also take a number of seconds since 1970 ("0.5"), which the schema does not allow.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and not RFC3339.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an RFC 3339 date and time with a time zone, e.g. "
            "2026-12-01T12:00:00Z"
        )
    return value


Rfc3339 = Annotated[datetime, BeforeValidator(_rfc3339)]


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
    since: Annotated[
        Rfc3339 | None,
        Query(description="Only lines from then on: an RFC 3339 time, e.g. 2026-12-01T12:00:00Z."),
    ] = None,
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
