"""The physical floor: the same containers driven by direct aiodocker calls, the same image, the
same configuration tether gives its containers, and an endpoint probe as cheap as it can be."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import aiodocker

from harness import IMAGE

HEALTH_PATH = "/healthz"
CONTAINER_PORT = 8080
STOP_GRACE_S = 10  # tether's default stop_grace_s


def container_config(host_port: int, labels: dict[str, str]) -> dict[str, Any]:
    """What the engine driver (`DockerDriver.create`) asks Docker for, for the same spec."""
    port = f"{CONTAINER_PORT}/tcp"
    return {
        "Image": IMAGE,
        "Env": [],
        "Labels": labels,
        "StopTimeout": STOP_GRACE_S,
        "ExposedPorts": {port: {}},
        "HostConfig": {
            "RestartPolicy": {"Name": "no"},
            "PortBindings": {port: [{"HostIp": "127.0.0.1", "HostPort": str(host_port)}]},
        },
    }


def docker_time(value: str | None) -> float | None:
    """A Docker timestamp (nanoseconds, UTC) as Unix seconds; None for Docker's zero time."""
    if not value or value.startswith("0001-"):
        return None
    head, _, frac = value.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()
    return seconds + (float(f"0.{frac}") if frac else 0.0)


async def times(docker: aiodocker.Docker, container_id: str) -> tuple[float | None, float | None]:
    """(StartedAt, FinishedAt) of a container, from `docker inspect`."""
    data = await docker.containers.container(container_id).show()
    return docker_time(data["State"]["StartedAt"]), docker_time(data["State"]["FinishedAt"])


async def probe(port: int, timeout_s: float = 1.0, host: str = "127.0.0.1") -> bool:
    """GET /healthz on host:port answers 2xx."""
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET {HEALTH_PATH} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            line = await reader.readline()
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    parts = line.split()
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].startswith(b"2")


async def wait_ready(port: int, timeout_s: float = 30.0, interval_s: float = 0.005) -> float:
    """Poll the endpoint until it answers; return when it first did (Unix seconds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await probe(port):
            return time.time()
        await asyncio.sleep(interval_s)
    raise TimeoutError(f"127.0.0.1:{port} did not answer {HEALTH_PATH} within {timeout_s} s")


async def start_with_retry(docker: aiodocker.Docker, container_id: str) -> None:
    """Start; a 304/409 (still stopping after a kill) is retried until Docker takes it."""
    for _ in range(400):
        try:
            await docker.containers.container(container_id).start()
            return
        except aiodocker.DockerError as exc:
            if exc.status not in (304, 409):
                raise
            await asyncio.sleep(0.005)
    raise TimeoutError(f"container {container_id[:12]} could not be started")


async def bounded(
    concurrency: int, items: Iterable[Any], work: Callable[[Any], Awaitable[Any]]
) -> list[Any]:
    """Run `work` over `items`, at most `concurrency` at once (a worker pool, like tether's)."""
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    listed = list(items)
    for index, item in enumerate(listed):
        queue.put_nowait((index, item))
    results: list[Any] = [None] * len(listed)

    async def worker() -> None:
        while not queue.empty():
            index, item = queue.get_nowait()
            results[index] = await work(item)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(listed)) or 1)))
    return results
