"""Container output for `tether logs`, as the API reads it (`tether.api.logs.LogSource`).

It follows a project across its containers: a restart, a stop and start, a new deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

import aiodocker
import aiohttp

from tether.api.errors import LogsUnavailable
from tether.api.models import LogAttach, LogLine
from tether.operator.dockerlogs import log_lines, log_params, stamped
from tether.operator.engine.docker.driver import DockerDriver
from tether.operator.engine.docker.faults import DockerFault, DockerUnavailable
from tether.operator.engine.state import Container
from tether.operator.labels import LABEL_INSTALLATION, LABEL_PROJECT

LOG_REATTACH_DELAY_S = 0.5  # before reading a still-running container whose stream just ended


class ContainerLogs:
    """Reads output with the driver's client and deadline (the lists and inspects go through its
    calls; the log stream, which may stay open for as long as a person follows it, does not)."""

    def __init__(self, driver: DockerDriver) -> None:
        self._driver = driver
        self.url = driver.url
        self.installation = driver.installation

    async def close(self) -> None:
        await self._driver.close()

    async def logs(
        self,
        project: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: datetime | None = None,
    ) -> AsyncGenerator[LogAttach | LogLine, None]:
        """The output of the project's current container (the running one, else the newest),
        stdout and stderr, oldest first: at most `tail` lines, none before `since`.

        With `follow`, lines are streamed as they come, and when the container stops (a stop, a
        restart, a replacement by a new deployment) the stream moves on to whichever container
        of the project starts next: a new one from its first line, the same one from where it
        left off. Each container is announced by a `LogAttach` before its lines.
        """
        try:
            current = await self._log_container(project, running_only=False)
            sent_until: dict[str, datetime] = {}  # container id → time of its last line sent
            first = True
            while True:
                if current is not None:
                    yield LogAttach(
                        container=current.id,
                        name=current.name,
                        version=current.version,
                        state=current.state,
                        started_at=current.started_at,
                    )
                    floor = sent_until.get(current.id)
                    lines = self._container_logs(
                        current.id,
                        current.version,
                        follow=follow,
                        tail=tail if first else None,
                        since=since if first else floor,
                    )
                    async with contextlib.aclosing(lines):
                        async for line in lines:
                            if floor is not None and line.time <= floor:
                                continue  # sent before this container was stopped and restarted
                            sent_until[current.id] = line.time
                            yield line
                if not follow:
                    return
                first = False
                current = await self._next_log_container(project, current)
        except (aiodocker.DockerError, aiohttp.ClientError, OSError, DockerFault) as exc:
            raise LogsUnavailable(
                f"cannot read the output of {project!r} from Docker at {self.url}: "
                f"{getattr(exc, 'message', None) or exc or type(exc).__name__}",
                hint="check that dockerd is running and that TETHER_DOCKER_URL points at it",
            ) from exc

    async def _log_container(self, project: str, *, running_only: bool) -> Container | None:
        """The project's container whose output `tether logs` shows: the running one, else the
        newest (None if there is none, or, with `running_only`, none running)."""
        listed = await self._driver.call(
            "list",
            lambda: self._driver.client.containers.list(
                all=True, filters=self._driver.label_filter(project)
            ),
        )
        raws: list[dict[str, Any]] = [c._container for c in listed]
        running = [r for r in raws if r.get("State") == "running"]
        candidates = running or ([] if running_only else raws)
        if not candidates:
            return None
        chosen = max(candidates, key=lambda r: (int(r.get("Created") or 0), str(r["Id"])))
        return await self._driver.inspect(chosen["Id"])

    async def _next_log_container(self, project: str, previous: Container | None) -> Container:
        """Wait until one of the project's containers runs, and return it."""
        # A client of its own: aiodocker shares one events stream, with one filter, per client.
        docker = aiodocker.Docker(url=self.url)
        try:
            # `since` replays what started while this subscription was being set up.
            subscriber = docker.events.subscribe(  # type: ignore[no-untyped-call]
                filters={
                    "type": ["container"],
                    "event": ["start"],
                    "label": [
                        f"{LABEL_INSTALLATION}={self.installation}",
                        f"{LABEL_PROJECT}={project}",
                    ],
                },
                since=str(int(time.time()) - 1),
            )
            while True:
                found = await self._log_container(project, running_only=True)
                if found is not None:
                    if previous is not None and found.id == previous.id:
                        # Its stream ended while Docker still shows it running (it is stopping,
                        # or the stream broke): look again shortly, from where it left off.
                        await asyncio.sleep(LOG_REATTACH_DELAY_S)
                        found = await self._log_container(project, running_only=True)
                    if found is not None:
                        return found
                if await subscriber.get() is None:
                    raise DockerUnavailable("events", "the Docker events stream ended")
        finally:
            with contextlib.suppress(aiodocker.DockerError, aiohttp.ClientError, OSError):
                await docker.events.stop()  # type: ignore[no-untyped-call]
            await docker.close()

    async def _container_logs(
        self,
        container_id: str,
        version: int,
        *,
        follow: bool,
        tail: int | None,
        since: datetime | None,
    ) -> AsyncGenerator[LogLine, None]:
        """One container's output, stdout and stderr in the order Docker has it, until its end
        (with `follow`: until the container stops)."""
        params = log_params(follow=follow, tail=tail, since=since)
        lines = log_lines(self._driver, f"containers/{container_id}/logs", params)
        try:
            async with contextlib.aclosing(lines):
                async for stream, raw in lines:
                    when, text = stamped(raw)
                    yield LogLine(
                        container=container_id,
                        version=version,
                        stream=stream,
                        time=when or datetime.now(UTC),
                        text=text,
                    )
        except aiodocker.DockerError as exc:
            if exc.status != 404:  # removed meanwhile: nothing (more) to show
                raise
