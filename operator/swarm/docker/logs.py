"""A project's output under the swarm runtime, for `tether logs` (`tether.api.logs.LogSource`).

The manager gathers a service's output from whichever nodes its tasks ran on
(`services/ID/logs`), so the API needs no access to the nodes. A service's stream carries every
task it has had (Swarm keeps a few shut-down ones) and, followed, each new task as it starts:
a restart, a new deployment, a task moved off a lost node. Shown, as under the engine runtime, is
the project's current task (the running one, else the newest) and, with `follow`, each task that
starts after it. A task's stream never ends when the task does (checked against Docker 20.10), so
the service's is the one followed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import unquote

import aiodocker

from tether.api.errors import LogsUnavailable
from tether.api.models import LogAttach, LogLine
from tether.operator.dockerlogs import log_lines, log_params, stamped
from tether.operator.swarm.docker.decode import EPOCH
from tether.operator.swarm.docker.driver import SwarmDriver
from tether.operator.swarm.docker.faults import SwarmFault
from tether.operator.swarm.state import Service, Task

TASK_ATTRIBUTE = "com.docker.swarm.task.id"  # of the details Docker puts before each line
REATTACH_DELAY_S = 0.5  # before reading a service again whose followed stream ended
SERVICE_POLL_S = 1.0  # while following a project that has no service (yet, or any more)


class ServiceLogs:
    """Reads output with the swarm driver's client and deadline (the lists go through its
    calls; the log stream, which may stay open for as long as a person follows it, does not)."""

    def __init__(self, driver: SwarmDriver) -> None:
        self._driver = driver
        self.url = driver.url

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
        """The output of the project's current task, stdout and stderr, oldest first: at most
        `tail` lines, none before `since`. With `follow`, lines as they come, and those of each
        task that starts later, each task announced by a `LogAttach` before its first line."""
        shown = Shown(began=datetime.now(UTC))
        try:
            while True:
                service = await self._service(project)
                if service is not None:
                    lines = self._read(service, shown, follow=follow, tail=tail, since=since)
                    async with contextlib.aclosing(lines):
                        async for item in lines:
                            yield item
                if not follow:
                    return
                await asyncio.sleep(REATTACH_DELAY_S if service is not None else SERVICE_POLL_S)
        except (aiodocker.DockerError, SwarmFault, OSError) as exc:
            raise LogsUnavailable(
                f"cannot read the output of {project!r} from the Swarm manager at {self.url}: "
                f"{getattr(exc, 'message', None) or exc or type(exc).__name__}",
                hint="check that the manager's dockerd is running and that TETHER_DOCKER_URL "
                "points at it",
            ) from exc

    async def _service(self, project: str) -> Service | None:
        """The service tether named for the project (the one its passes act on)."""
        services = await self._driver.services(project)
        return next((s for s in services if self._driver.project_of(s) == project), None)

    async def _tasks(self, service: Service) -> dict[str, Task]:
        return {t.id: t for t in await self._driver.tasks({}, [service.name])}

    async def _read(
        self,
        service: Service,
        shown: Shown,
        *,
        follow: bool,
        tail: int | None,
        since: datetime | None,
    ) -> AsyncGenerator[LogAttach | LogLine, None]:
        """One read of the service's stream; a follow's next read takes up where this one left
        off (the lines it showed are not shown again)."""
        tasks = await self._tasks(service)
        if not shown.read:
            current = shown.start(tasks.values())
            if current is not None:
                shown.announced.add(current.id)
                yield _attach(service, current)
        else:
            tail, since = None, shown.resume_since(since)
        params = log_params(follow=follow, tail=tail, since=since, details=True)
        lines = log_lines(self._driver, f"services/{service.id}/logs", params)
        try:
            async with contextlib.aclosing(lines):
                async for stream, raw in lines:
                    task_id, when, text = service_line(raw)
                    if not shown.wants(task_id, when, follow=follow):
                        continue
                    if task_id not in tasks:  # started after this read began
                        tasks = await self._tasks(service)
                    task = tasks.get(task_id)
                    if task is None:  # gone from Swarm's history, or not a task's line
                        shown.older.add(task_id)
                        continue
                    if task_id not in shown.announced:
                        shown.announced.add(task_id)
                        yield _attach(service, task)
                    shown.tasks.add(task_id)
                    shown.until[task_id] = when
                    yield LogLine(
                        container=task_id, version=task.version, stream=stream, time=when, text=text
                    )
        except aiodocker.DockerError as exc:
            if exc.status != 404:  # the service removed meanwhile: nothing (more) to show
                raise


@dataclass
class Shown:
    """What one `logs` call shows, across its reads of the service's stream: the current task
    (the running one, else the newest) and the tasks created after it, each line once."""

    began: datetime  # when the first read began
    read: bool = False  # the first read has chosen the current task
    tasks: set[str] = field(default_factory=set)  # the current task, and those started since
    older: set[str] = field(default_factory=set)  # tasks created before it: never shown
    announced: set[str] = field(default_factory=set)  # tasks whose `LogAttach` was sent
    until: dict[str, datetime] = field(default_factory=dict)  # task id → its last line's time

    def start(self, tasks: Iterable[Task]) -> Task | None:
        """The first read: choose the current task; those created before it are not shown."""
        listed = list(tasks)
        running = [t for t in listed if t.state == "running" and t.desired_state == "running"]
        current = max(running or listed, key=_age, default=None)
        self.read = True
        if current is not None:
            self.tasks.add(current.id)
            self.older = {t.id for t in listed if _age(t) < _age(current)}
        return current

    def wants(self, task_id: str, when: datetime, *, follow: bool) -> bool:
        """A line of this task, at this time: the current task's or (following) a newer one's,
        and not shown before."""
        if task_id in self.older or (task_id not in self.tasks and not follow):
            return False
        floor = self.until.get(task_id)
        return floor is None or when > floor

    def resume_since(self, since: datetime | None) -> datetime | None:
        """Where a follow reads the stream again from: the earliest of the tasks' last lines
        shown (the later ones' repeats are skipped by `wants`), else the start of the first
        read (with what the person asked for, if later): never the whole history again."""
        if self.until:
            return min(self.until.values())
        return max(since, self.began) if since is not None else self.began


def _age(task: Task) -> tuple[datetime, str]:
    return task.created_at or EPOCH, task.id


def _attach(service: Service, task: Task) -> LogAttach:
    return LogAttach(
        container=task.id,
        name=f"{service.name}.{task.slot}.{task.id}",  # Docker's name for the task's container
        version=task.version,
        state=task.state,
        started_at=task.since if task.state == "running" else None,
    )


def service_line(raw: bytes) -> tuple[str, datetime, str]:
    """A line of a service's stream with details, `TIME ATTRIBUTES TEXT` (the attributes:
    URL-escaped `key=value` pairs, comma-separated, naming its node, service and task): its
    task ("" if none is named), time and text."""
    when, rest = stamped(raw)
    attributes, _, text = rest.partition(" ")
    pairs = dict(pair.partition("=")[::2] for pair in attributes.split(","))
    return unquote(pairs.get(TASK_ATTRIBUTE, "")), when or datetime.now(UTC), text
