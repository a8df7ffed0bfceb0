"""The log channel: container output served by the operator process to API processes that have
no Docker access of their own (compose's API container has no Docker socket, on purpose: the
socket is root on the host, and the API faces the network).

The operator, which holds the socket already, serves `GET /logs/{project}?follow&tail&since` on
a unix socket (`TETHER_LOGS_SOCKET`) in a volume that only it and the API mount; each request
must carry the shared secret (`TETHER_LOGS_SECRET`) in `Authorization: Bearer`, compared in
constant time. The answer streams one JSON object per line: `{"kind": "container", ...}` (a
`LogAttach`), `{"kind": "log", ...}` (a `LogLine`), or `{"kind": "error", "error", "message",
"hint"}`, which ends it. The API reads it through `RemoteLogs`, a `LogSource` like the Docker
driver's, so that its logs route does not know which one it has.

Bounded: the operator serves at most `MAX_STREAMS` streams at once (more are answered 503), each
read from Docker under the driver's call cap; the API refuses a line longer than
`MAX_LINE_BYTES` and gives up on a channel that does not answer within `CONNECT_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tether.api.errors import LogsUnavailable, TetherError
from tether.api.logs import LogSource
from tether.api.models import PROJECT_NAME_PATTERN, LogAttach, LogLine

log = structlog.get_logger("tether.logchannel")
MAX_STREAMS = 64
MAX_LINE_BYTES = 1024 * 1024
CONNECT_TIMEOUT_S = 5.0
MEDIA_TYPE = "application/x-ndjson"


def _line(kind: str, body: dict[str, Any]) -> bytes:
    return json.dumps({"kind": kind, **body}).encode() + b"\n"


def _authorized(request: Request, secret: str) -> bool:
    given = request.headers.get("authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {secret}".encode())


def create_channel_app(
    source: LogSource, secret: str, *, max_streams: int = MAX_STREAMS
) -> Starlette:
    """The operator's side: the output of `source` for the API processes that know `secret`."""
    streams = asyncio.Semaphore(max_streams)

    async def logs(request: Request) -> Response:
        if not _authorized(request, secret):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        project = request.path_params["project"]
        try:
            follow = request.query_params.get("follow") == "true"
            tail = int(request.query_params["tail"]) if "tail" in request.query_params else None
            since_text = request.query_params.get("since")
            since = datetime.fromisoformat(since_text) if since_text else None
        except ValueError:
            return JSONResponse({"error": "invalid_request"}, status_code=422)
        if streams.locked():
            return JSONResponse({"error": "too_many_streams"}, status_code=503)
        return StreamingResponse(
            _serve(source, project, follow=follow, tail=tail, since=since, done=streams),
            media_type=MEDIA_TYPE,
        )

    return Starlette(
        routes=[Route("/logs/{project:str}", logs, methods=["GET"])],
    )


async def _serve(
    source: LogSource,
    project: str,
    *,
    follow: bool,
    tail: int | None,
    since: datetime | None,
    done: asyncio.Semaphore,
) -> AsyncIterator[bytes]:
    await done.acquire()
    items = source.logs(project, follow=follow, tail=tail, since=since)
    try:
        async for item in items:
            kind = "container" if isinstance(item, LogAttach) else "log"
            yield _line(kind, item.model_dump(mode="json"))
    except TetherError as exc:
        yield _line("error", {"error": exc.error, "message": exc.message, "hint": exc.hint})
    except Exception as exc:
        log.exception("serving logs failed", project=project)
        yield _line("error", {"error": "internal", "message": type(exc).__name__, "hint": None})
    finally:
        done.release()
        await items.aclose()


class RemoteLogs:
    """The API's side: a `LogSource` that reads the operator's log channel on `socket_path`."""

    def __init__(self, socket_path: str, secret: str) -> None:
        self.socket_path = socket_path
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket_path),
            base_url="http://operator",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=httpx.Timeout(CONNECT_TIMEOUT_S, read=None),
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def logs(
        self,
        project: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: datetime | None = None,
    ) -> AsyncGenerator[LogAttach | LogLine, None]:
        if not _is_name(project):  # never a path of the channel's own
            raise LogsUnavailable(f"{project!r} is not a project name")
        params: dict[str, str] = {"follow": "true" if follow else "false"}
        if tail is not None:
            params["tail"] = str(tail)
        if since is not None:
            params["since"] = since.isoformat()
        try:
            async with self._client.stream("GET", f"/logs/{project}", params=params) as answer:
                if answer.status_code != 200:
                    raise LogsUnavailable(
                        f"the operator's log channel answered {answer.status_code}",
                        hint=_HINTS.get(answer.status_code, "see the operator's log"),
                    )
                async for line in answer.aiter_lines():
                    if len(line) > MAX_LINE_BYTES:
                        raise LogsUnavailable("a line of the log channel is too long")
                    if line:
                        yield _item(json.loads(line))
        except httpx.TransportError as exc:
            raise LogsUnavailable(
                f"the operator's log channel ({self.socket_path}) cannot be reached "
                f"({type(exc).__name__})",
                hint="check that `tether operator` runs with the same TETHER_LOGS_SOCKET",
            ) from exc


_HINTS = {
    401: "TETHER_LOGS_SECRET differs between the API and the operator",
    503: "the operator serves as many log streams as it may; retry shortly",
}


def _is_name(project: str) -> bool:
    return re.fullmatch(PROJECT_NAME_PATTERN, project) is not None


def _item(data: dict[str, Any]) -> LogAttach | LogLine:
    kind = data.pop("kind", None)
    if kind == "container":
        return LogAttach.model_validate(data)
    if kind == "log":
        return LogLine.model_validate(data)
    if kind == "error":
        raise LogsUnavailable(str(data.get("message")), hint=data.get("hint"))
    raise LogsUnavailable(f"the operator's log channel sent an unknown line ({kind!r})")
