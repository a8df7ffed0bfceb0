"""The Docker driver: the only module that talks to Docker.

It acts only on containers that carry this installation's labels, and it never trusts what an error
code says about state: a refused or unacknowledged action is reported, and the reconciler looks at
the container again before deciding anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiodocker
import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from tether.api.errors import LogsUnavailable
from tether.api.models import LogAttach, LogLine, LogStream
from tether.operator.metrics import DOCKER_CALLS
from tether.operator.state import (
    LABEL_INSTALLATION,
    LABEL_PROJECT,
    LABEL_RESTART,
    LABEL_SPEC_HASH,
    LABEL_VERSION,
    Container,
    Want,
)

log = structlog.get_logger("tether.docker")
T = TypeVar("T")
CALL_TIMEOUT_S = 30.0
_NEVER = "0001-01-01T00:00:00Z"
LOG_REATTACH_DELAY_S = 0.5  # before reading a still-running container whose stream just ended
# The Docker events each of tether's own actions causes. The pass that acted observes the outcome
# itself, so they need not wake another pass (which halved the passes of a bulk start). Each is
# expected once per action: a container that crashes right after tether stopped and started it
# again says "die" once more, and that one is no echo.
_ECHOES = {
    "create": ("create",),
    "start": ("start",),
    "stop": ("kill", "kill", "die", "stop"),  # the second kill: SIGKILL when the grace runs out
    "unpause": ("unpause",),
    "remove": ("destroy",),
}
ECHO_WINDOW_S = 10.0  # how long after an action its events may still be on their way


class DockerFault(Exception):
    """Docker did not do what was asked. `status` is its HTTP status code, if it answered."""

    transient = True

    def __init__(self, operation: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{operation}: {message}" + (f" (HTTP {status})" if status else ""))
        self.operation = operation
        self.status = status


class DockerUnavailable(DockerFault):
    """Docker could not be reached, timed out or failed (5xx): worth retrying."""


class DockerRefused(DockerFault):
    """Docker refused an action about a container's state (404, 409). Not believed: the
    container is inspected again and the next plan decides."""


class ImageNotFound(DockerFault):
    transient = False


class NameConflict(DockerFault):
    """A container without this installation's labels holds the name tether wants."""

    transient = False


@dataclass(frozen=True)
class Summary:
    """A container as `docker ps` lists it: enough to tell whether a project needs a pass."""

    id: str
    project: str
    state: str
    version: int
    spec_hash: str
    restart_token: int


def _parse_time(value: str | None) -> datetime | None:
    if not value or value == _NEVER:
        return None
    # Docker writes nanoseconds; Python reads at most microseconds.
    head, _, frac = value.rstrip("Z").partition(".")
    micros = (frac + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{micros}").replace(tzinfo=UTC)


def _int_label(labels: dict[str, str], key: str) -> int:
    try:
        return int(labels.get(key, "-1"))
    except ValueError:
        return -1


def container_from_inspect(data: dict[str, Any]) -> Container:
    labels = data["Config"].get("Labels") or {}
    state = data["State"]
    return Container(
        id=data["Id"],
        name=data["Name"].lstrip("/"),
        state=state["Status"],
        version=_int_label(labels, LABEL_VERSION),
        restart_token=_int_label(labels, LABEL_RESTART),
        spec_hash=labels.get(LABEL_SPEC_HASH, ""),
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        created_at=_parse_time(data.get("Created")),
        started_at=_parse_time(state.get("StartedAt")),
        finished_at=_parse_time(state.get("FinishedAt")),
    )


class _Expected:
    """One event an action of tether's is expected to cause, until a while after the action."""

    def __init__(self) -> None:
        self.until = math.inf  # while the action is in flight


class _Echoes:
    """The events tether's own actions are expected to cause, by container id (or, for a
    create, by name: the id is known only once Docker answers) and action. Each expected event
    is used up by the first event that matches it."""

    def __init__(self) -> None:
        self._expected: dict[tuple[str, str], list[_Expected]] = {}

    @contextlib.contextmanager
    def expecting(self, container: str, operation: str) -> Iterator[Callable[[], None]]:
        """Expect the echoes of `operation` while it runs and for a while after; the function
        yielded withdraws them (Docker refused: nothing happened)."""
        now = time.monotonic()
        self._expected = {
            key: live for key, pending in self._expected.items() if (live := _live(pending, now))
        }
        mine = [_Expected() for _ in _ECHOES[operation]]
        for action, expected in zip(_ECHOES[operation], mine, strict=True):
            self._expected.setdefault((container, action), []).append(expected)

        def withdraw() -> None:
            for expected in mine:
                expected.until = -math.inf

        try:
            yield withdraw
        finally:
            until = time.monotonic() + ECHO_WINDOW_S
            for expected in mine:
                expected.until = min(expected.until, until)

    def is_echo(self, action: str, *containers: str) -> bool:
        now = time.monotonic()
        for container in containers:
            pending = _live(self._expected.get((container, action), []), now)
            if pending:
                self._expected[(container, action)] = pending[1:]
                return True
        return False


def _live(pending: list[_Expected], now: float) -> list[_Expected]:
    return [expected for expected in pending if expected.until >= now]


class DockerDriver:
    def __init__(self, url: str, installation: str, *, concurrency: int = 16) -> None:
        self._docker = aiodocker.Docker(url=url)
        self.url = url
        self.installation = installation
        self._calls = asyncio.Semaphore(concurrency)
        self._echoes = _Echoes()

    async def close(self) -> None:
        await self._docker.close()

    def _label_filter(self, project: str | None = None) -> dict[str, list[str]]:
        labels = [f"{LABEL_INSTALLATION}={self.installation}"]
        if project is not None:
            labels.append(f"{LABEL_PROJECT}={project}")
        return {"label": labels}

    async def _call(
        self,
        operation: str,
        call: Callable[[], Awaitable[T]],
        *,
        deadline_s: float = CALL_TIMEOUT_S,
    ) -> T:
        """One Docker API call under the global cap, retried on transient faults."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(DockerUnavailable),
            stop=stop_after_attempt(3),
            wait=wait_exponential_jitter(multiplier=0.1, max=1.0, jitter=0.1),
            reraise=True,
        ):
            with attempt:
                async with self._calls:
                    try:
                        async with asyncio.timeout(deadline_s):
                            result = await call()
                    except TimeoutError as exc:
                        DOCKER_CALLS.labels(operation, "timeout").inc()
                        raise DockerUnavailable(
                            operation, f"no answer in {deadline_s:.0f} s"
                        ) from exc
                    except aiohttp.ClientError as exc:
                        DOCKER_CALLS.labels(operation, "connection").inc()
                        raise DockerUnavailable(operation, str(exc) or type(exc).__name__) from exc
                    except aiodocker.DockerError as exc:
                        DOCKER_CALLS.labels(operation, str(exc.status)).inc()
                        if exc.status >= 500:  # aiodocker reports a lost connection as 900
                            raise DockerUnavailable(operation, exc.message, exc.status) from exc
                        raise
                    DOCKER_CALLS.labels(operation, "ok").inc()
                    return result
        raise AssertionError("unreachable: tenacity re-raises the last attempt's error")

    async def ping(self) -> None:
        await self._call("ping", lambda: self._docker.system.info())

    async def list_all(self) -> list[Summary]:
        """Every container of this installation, in one call."""
        listed = await self._call(
            "list",
            lambda: self._docker.containers.list(all=True, filters=self._label_filter()),
        )
        summaries = []
        for container in listed:
            raw: dict[str, Any] = container._container
            labels = raw.get("Labels") or {}
            summaries.append(
                Summary(
                    id=raw["Id"],
                    project=labels.get(LABEL_PROJECT, ""),
                    state=raw.get("State", ""),
                    version=_int_label(labels, LABEL_VERSION),
                    spec_hash=labels.get(LABEL_SPEC_HASH, ""),
                    restart_token=_int_label(labels, LABEL_RESTART),
                )
            )
        return summaries

    async def observe(self, project: str) -> tuple[Container, ...]:
        """The project's containers, freshly inspected."""
        listed = await self._call(
            "list",
            lambda: self._docker.containers.list(all=True, filters=self._label_filter(project)),
        )
        inspected = await asyncio.gather(*(self.inspect(c.id) for c in listed))
        return tuple(c for c in inspected if c is not None)

    async def inspect(self, container_id: str) -> Container | None:
        """One container, freshly inspected; None if it is gone."""
        try:
            data = await self._call(
                "inspect", lambda: self._docker.containers.container(container_id).show()
            )
        except aiodocker.DockerError as exc:
            if exc.status == 404:  # removed meanwhile
                return None
            raise DockerFault("inspect", exc.message, exc.status) from exc
        return container_from_inspect(data)

    async def create(
        self, project: str, want: Want, *, host_port: int, publish_address: str
    ) -> None:
        spec = want.deployment
        labels = {
            LABEL_INSTALLATION: self.installation,
            LABEL_PROJECT: project,
            LABEL_VERSION: str(spec.version),
            LABEL_SPEC_HASH: want.spec_hash,
            LABEL_RESTART: str(want.restart_token or 0),
        }
        host_config: dict[str, Any] = {"RestartPolicy": {"Name": "no"}}
        config: dict[str, Any] = {
            "Image": spec.image,
            "Env": [f"{key}={value}" for key, value in spec.env.items()],
            "Labels": labels,
            "StopTimeout": spec.stop_grace_s,
            "HostConfig": host_config,
        }
        if spec.command is not None:
            config["Cmd"] = spec.command
        if spec.port is not None:
            port = f"{spec.port}/tcp"
            config["ExposedPorts"] = {port: {}}
            host_config["PortBindings"] = {
                port: [{"HostIp": publish_address, "HostPort": str(host_port)}]
            }
        if spec.memory_mb is not None:
            host_config["Memory"] = spec.memory_mb * 1024 * 1024
        if spec.cpus is not None:
            host_config["NanoCpus"] = int(spec.cpus * 1e9)
        name = want.container_name
        try:
            with self._echoes.expecting(name, "create"):
                await self._call(
                    "create", lambda: self._docker.containers.create(config, name=name)
                )
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise ImageNotFound(
                    "create",
                    f"image {spec.image!r} does not exist on the Docker host",
                    exc.status,
                ) from exc
            if exc.status == 409:
                await self._check_name_holder(name, exc)
                raise DockerRefused("create", exc.message, exc.status) from exc
            raise DockerFault("create", exc.message, exc.status) from exc

    async def _check_name_holder(self, name: str, exc: aiodocker.DockerError) -> None:
        try:
            data = await self._call("inspect", lambda: self._docker.containers.get(name))
        except aiodocker.DockerError:
            return  # gone already: the next pass creates it
        labels = data._container.get("Config", {}).get("Labels") or {}
        if labels.get(LABEL_INSTALLATION) != self.installation:
            raise NameConflict(
                "create",
                f"a container not managed by tether already has the name {name!r}; "
                "tether leaves it alone: rename or remove it",
                exc.status,
            ) from exc

    async def _act(
        self,
        operation: str,
        container_id: str,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        deadline_s: float = CALL_TIMEOUT_S,
    ) -> None:
        async def call() -> int:
            # aiodocker's container methods drop the status, and 304 means Docker did nothing.
            async with self._docker._query(
                f"containers/{container_id}{path}", method=method, params=params, timeout=None
            ) as response:
                return response.status

        with self._echoes.expecting(container_id, operation) as withdraw_echoes:
            try:
                status = await self._call(operation, call, deadline_s=deadline_s)
            except aiodocker.DockerError as exc:
                if exc.status in (404, 409):
                    withdraw_echoes()
                    raise DockerRefused(operation, exc.message, exc.status) from exc
                raise DockerFault(operation, exc.message, exc.status) from exc
            if status == 304:  # already started, or stopped: no event will come
                withdraw_echoes()

    async def start(self, container_id: str) -> None:
        await self._act("start", container_id, "POST", "/start")

    async def stop(self, container_id: str, grace_s: int) -> None:
        await self._act(
            "stop",
            container_id,
            "POST",
            "/stop",
            params={"t": grace_s},
            deadline_s=CALL_TIMEOUT_S + grace_s,
        )

    async def unpause(self, container_id: str) -> None:
        await self._act("unpause", container_id, "POST", "/unpause")

    async def remove(self, container_id: str) -> None:
        await self._act("remove", container_id, "DELETE", "")

    async def events(self, since: float | None = None) -> AsyncGenerator[str, None]:
        """Names of projects whose containers changed, save by this driver's own actions, until
        the stream ends; with `since` (a Unix time), Docker first replays what happened from then
        on.

        The stream ends silently when Docker goes away and drops events for slow readers: the
        caller reconnects and resyncs.
        """
        params: dict[str, Any] = {
            "filters": {
                "type": ["container"],
                "label": [f"{LABEL_INSTALLATION}={self.installation}"],
            }
        }
        if since is not None:
            params["since"] = f"{since:.9f}"
        # aiodocker's events API carries no type annotations.
        subscriber = self._docker.events.subscribe(**params)  # type: ignore[no-untyped-call]
        try:
            while True:
                event = await subscriber.get()
                if event is None:
                    return
                actor = event.get("Actor") or {}
                attributes = actor.get("Attributes") or {}
                project = attributes.get(LABEL_PROJECT)
                echo = self._echoes.is_echo(
                    str(event.get("Action", "")),
                    str(actor.get("ID", "")),
                    attributes.get("name", ""),
                )
                if project and not echo:
                    yield project
        finally:
            # Stopping re-raises whatever ended the stream's task (Docker gone): already handled.
            with contextlib.suppress(aiodocker.DockerError, aiohttp.ClientError, OSError):
                await self._docker.events.stop()  # type: ignore[no-untyped-call]

    # Container output (for the API's logs route: `tether.api.logs.LogSource`)

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
        listed = await self._call(
            "list",
            lambda: self._docker.containers.list(all=True, filters=self._label_filter(project)),
        )
        raws: list[dict[str, Any]] = [c._container for c in listed]
        running = [r for r in raws if r.get("State") == "running"]
        candidates = running or ([] if running_only else raws)
        if not candidates:
            return None
        chosen = max(candidates, key=lambda r: (int(r.get("Created") or 0), str(r["Id"])))
        return await self.inspect(chosen["Id"])

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
        params = {"stdout": "1", "stderr": "1", "timestamps": "1", "follow": "1" if follow else "0"}
        if tail is not None:
            params["tail"] = str(tail)
        if since is not None:
            params["since"] = _docker_time(since)
        # aiodocker's `container.log()` drops which stream a line came from, and leaves the
        # connection open when a follow is abandoned: the request is made here, its frames read
        # here, and its connection closed here whatever happens.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CALL_TIMEOUT_S, sock_read=None)
        try:
            async with self._docker._query(
                f"containers/{container_id}/logs", params=params, timeout=timeout
            ) as response:
                try:
                    pending: dict[LogStream, bytes] = {}
                    async for stream, payload in _frames(response.content):
                        *complete, pending[stream] = (pending.get(stream, b"") + payload).split(
                            b"\n"
                        )
                        for raw in complete:
                            yield _log_line(container_id, version, stream, raw)
                    for stream, rest in pending.items():
                        if rest:
                            yield _log_line(container_id, version, stream, rest)
                finally:
                    response.close()
        except aiodocker.DockerError as exc:
            if exc.status != 404:  # removed meanwhile: nothing (more) to show
                raise


def _docker_time(when: datetime) -> str:
    """A time as the Docker API takes it: Unix seconds with nine decimals."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    whole = int(when.replace(microsecond=0).timestamp())
    return f"{whole}.{when.microsecond:06d}000"


def _log_line(container_id: str, version: int, stream: LogStream, raw: bytes) -> LogLine:
    """A line as Docker sends it with timestamps: `2024-05-01T12:00:00.123456789Z text`."""
    text = raw.decode(errors="replace").rstrip("\r")
    stamp, _, rest = text.partition(" ")
    try:
        when = _parse_time(stamp)
    except ValueError:
        when, rest = None, text
    return LogLine(
        container=container_id,
        version=version,
        stream=stream,
        time=when or datetime.now(UTC),
        text=rest,
    )


async def _frames(content: aiohttp.StreamReader) -> AsyncIterator[tuple[LogStream, bytes]]:
    """Docker's multiplexed output of a container without a TTY (tether never gives one): frames
    of an 8-byte header (the stream: 1 stdout, 2 stderr; the length) and the bytes written."""
    while True:
        try:
            header = await content.readexactly(8)
            kind, length = struct.unpack(">BxxxL", header)
            payload = await content.readexactly(length)
        except (asyncio.IncompleteReadError, aiohttp.ClientError):
            return  # the end of the output, or a broken stream: the caller looks again
        yield ("stderr" if kind == 2 else "stdout"), payload


@dataclass(frozen=True)
class PostgresServer:
    """The Postgres container `tether up` runs: reused when it exists, its data in a volume."""

    image: str
    name: str = "tether-postgres"
    volume: str = "tether-pgdata"
    host_port: int = 5433
    password: str = "tether"

    @property
    def dsn(self) -> str:
        return f"postgresql://tether:{self.password}@127.0.0.1:{self.host_port}/tether"


async def ensure_postgres(docker_url: str, server: PostgresServer) -> None:
    """Start the Postgres container, creating it (and its volume) the first time."""
    docker = aiodocker.Docker(url=docker_url)
    try:
        try:
            container = await docker.containers.get(server.name)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
            try:
                await docker.images.inspect(server.image)
            except aiodocker.DockerError as missing:
                raise ImageNotFound(
                    "postgres",
                    f"image {server.image!r} is not on this Docker host and cannot be pulled "
                    "here; build it (scripts/provision) or set TETHER_POSTGRES_IMAGE",
                    missing.status,
                ) from missing
            container = await docker.containers.create(
                {
                    "Image": server.image,
                    "Env": [
                        "POSTGRES_USER=tether",
                        f"POSTGRES_PASSWORD={server.password}",
                        "POSTGRES_DB=tether",
                    ],
                    "Labels": {"dev.tether.role": "postgres"},
                    "ExposedPorts": {"5432/tcp": {}},
                    "HostConfig": {
                        "Binds": [f"{server.volume}:/var/lib/postgresql/data"],
                        "PortBindings": {
                            "5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(server.host_port)}]
                        },
                        "RestartPolicy": {"Name": "no"},
                    },
                },
                name=server.name,
            )
        await container.start()
    finally:
        await docker.close()


async def stop_postgres(docker_url: str, server: PostgresServer) -> None:
    docker = aiodocker.Docker(url=docker_url)
    try:
        await docker.containers.container(server.name).stop(t=30)
    finally:
        await docker.close()
