"""Project logs: the container output the API streams to `tether logs`.

The API reads it from Docker, but may not import the operator's Docker driver (layers): it takes
any `LogSource`, and `tether api` / `tether up` give it the driver. Without one, the logs route
answers 503.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
from typing import Protocol

import structlog

from tether.api.errors import TetherError
from tether.api.models import LogAttach, LogLine
from tether.api.sse import cleanup, frame

log = structlog.get_logger("tether.api.logs")


class LogSource(Protocol):
    """Where container output comes from: `tether.operator.engine.docker.logs.ContainerLogs`,
    or under the swarm runtime `tether.operator.swarm.docker.logs.ServiceLogs`."""

    def logs(
        self,
        project: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: datetime | None = None,
    ) -> AsyncGenerator[LogAttach | LogLine, None]:
        """The output of the project's current container, oldest first: `tail` lines at most,
        none before `since`; each container announced by a `LogAttach` before its lines. With
        `follow`, keep going: new lines as they come, and the project's next container when this
        one stops. Raises `LogsUnavailable` when Docker cannot be reached."""
        ...


async def stream(
    source: LogSource,
    project: str,
    *,
    follow: bool,
    tail: int | None,
    since: datetime | None,
) -> AsyncIterator[bytes]:
    """Server-sent events: `container` when a container's output starts, `log` per line, and
    `error` (which ends the stream) when the output cannot be read."""
    items = source.logs(project, follow=follow, tail=tail, since=since)
    try:
        async for item in items:
            yield frame("container" if isinstance(item, LogAttach) else "log", item)
    except TetherError as exc:
        yield frame("error", {"error": exc.error, "message": exc.message, "hint": exc.hint})
    except Exception as exc:
        log.exception("reading logs failed", project=project)
        yield frame(
            "error",
            {"error": "internal", "message": f"reading logs failed: {type(exc).__name__}"},
        )
    finally:
        with cleanup():
            await items.aclose()
