"""Helpers shared by test modules: polling with a deadline, loopback ports, a real uvicorn server
for an ASGI app, in-process operators, and removing an installation's containers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager
from typing import Any

import aiodocker
import uvicorn
from starlette.types import ASGIApp

from tether.api.settings import Settings
from tether.api.store import Store
from tether.cli.server import bind
from tether.operator.engine.docker.driver import DockerDriver
from tether.operator.labels import LABEL_INSTALLATION, LABEL_PROJECT
from tether.operator.runtimes import engine_runtime
from tether.operator.service import Operator

POLL_S = 0.05  # how often a condition is looked at again


async def wait_for(
    check: Callable[[], Awaitable[Any]],
    what: str,
    within_s: float = 45.0,
    *,
    every_s: float = POLL_S,
) -> Any:
    """Poll `check` until it returns something truthy, and return that; fail after `within_s`."""
    deadline = time.monotonic() + within_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every_s)
    raise AssertionError(f"timed out after {within_s} s waiting for {what}; last: {last!r}")


def wait_until(check: Callable[[], Any], what: str, within_s: float = 45.0) -> Any:
    """`wait_for` for synchronous code (a module-scoped fixture)."""
    deadline = time.monotonic() + within_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {within_s} s waiting for {what}; last: {last!r}")


async def elapsed(since: float, seconds: float) -> bool:
    return time.monotonic() - since >= seconds


def free_port() -> int:
    """A loopback port that nothing listens on (until someone binds it)."""
    [port] = free_ports(1)
    return port


def free_ports(count: int) -> list[int]:
    """`count` different loopback ports that nothing listens on (until someone binds them).
    All are held at once while the kernel picks them: two ports picked one after the other may
    be the same one (CI of 61d3d30: a test's API and operator got one port, and the API's
    readiness check found the operator's)."""
    with ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


@asynccontextmanager
async def serving(app: ASGIApp, port: int = 0) -> AsyncIterator[str]:
    """`app` on a real uvicorn server on loopback (`port`, or one the kernel picks): its URL.
    Served from a socket made by `bind`, as `tether api` serves it."""
    sock = bind("127.0.0.1", port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        if task.done():
            task.result()  # what the server died of
            raise AssertionError("uvicorn stopped before it started")
        return server.started

    try:
        # Polled more often than wait_for's default: most tests start a server of their own.
        await wait_for(started, "uvicorn to start", within_s=10, every_s=0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def project_containers(
    docker: aiodocker.Docker, installation: str, project: str
) -> list[dict[str, Any]]:
    """The project's containers, each inspected; one removed between the list and its inspect
    is left out (it is not there any more)."""
    listed = await docker.containers.list(
        all=True,
        filters={"label": [f"{LABEL_INSTALLATION}={installation}", f"{LABEL_PROJECT}={project}"]},
    )
    shown = []
    for container in listed:
        try:
            shown.append(await container.show())
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
    return shown


async def remove_containers(docker: aiodocker.Docker, installation: str) -> None:
    """Remove the installation's containers; fail, naming them, if the engine would not."""
    left = await docker.containers.list(
        all=True, filters={"label": [f"{LABEL_INSTALLATION}={installation}"]}
    )
    results = await asyncio.gather(*(c.delete(force=True) for c in left), return_exceptions=True)
    failed = [(c.id[:12], r) for c, r in zip(left, results, strict=True) if r is not None]
    assert not failed, f"the engine did not remove these containers: {failed}"


class Operators:
    """In-process operators, each running until `stop`, which stops them in the order started."""

    def __init__(self) -> None:
        self._running: list[tuple[asyncio.Event, asyncio.Task[None], DockerDriver | None]] = []

    def start(
        self,
        settings: Settings,
        store: Store,
        driver: DockerDriver | None = None,
        *,
        lease_ttl_s: float = 3.0,
        **kwargs: Any,
    ) -> Operator:
        """Without `driver`, the operator gets one of its own, closed once it has stopped. A short
        lease, so that a standby takes over within seconds."""
        own: DockerDriver | None = None
        if driver is None:
            driver = own = DockerDriver(settings.docker_url, settings.installation_id)
        operator = Operator(
            settings, store, engine_runtime(settings, driver), lease_ttl_s=lease_ttl_s, **kwargs
        )
        stop = asyncio.Event()
        self._running.append((stop, asyncio.create_task(operator.run(stop)), own))
        return operator

    async def stop(self) -> None:
        for stop, task, own in self._running:
            stop.set()
            await task
            if own is not None:
                await own.close()
