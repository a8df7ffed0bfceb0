"""1. One project: desired write acknowledged → container running (Docker's StartedAt) and →
Ready (the operator's `converged Ready` record), for a start from stopped and for a fresh deploy.

Baseline, interleaved run by run (alternating which goes first): direct aiodocker `start` of a
stopped container, and `create` + `start` of a new one, with the same image and configuration;
its Ready is the first answer of its endpoint, polled every 5 ms.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiodocker

from docker_floor import container_config, times, wait_ready
from harness import Run
from tether_side import OWNER, SPEC, OperatorProcess, Tether

SETTLE_S = 0.5  # after a stop, before the measured start: let the stop's own events pass


def _arm() -> dict[str, list[float]]:
    return {"running": [], "ready": [], "write": []}


async def measure(run: Run, docker: aiodocker.Docker, iterations: int) -> dict[str, Any]:
    scenario = "single"
    database = await run.database(scenario)
    ports = run.ports(16)
    floor_ports = run.ports(2)
    installation = run.installation(scenario)
    operator = OperatorProcess(run, database, installation, ports, scenario)
    await operator.start()
    tether = await Tether.open(database, ports, docker, installation)
    labels = run.labels(scenario)
    start = {"tether": _arm(), "floor": _arm()}
    fresh = {"tether": _arm(), "floor": _arm()}
    try:
        [write] = await tether.create(["solo"], start=True)
        await tether.converged([write], "Ready")
        floor = await docker.containers.create(
            container_config(floor_ports.first, labels), name=f"bench-{run.id}-solo"
        )
        await floor.start()
        await wait_ready(floor_ports.first)

        async def tether_start() -> None:
            stopped = await tether.set_running("solo", False)
            await tether.converged([stopped], "Stopped")
            await asyncio.sleep(SETTLE_S)
            write = await tether.set_running("solo", True)
            ready = (await tether.converged([write], "Ready"))["solo"]
            started, _ = await times(docker, await tether.container_of("solo"))
            assert started is not None
            _record(start["tether"], write.acked, started, ready, write.acked - write.began)

        async def floor_start() -> None:
            await floor.stop(t=10)
            await asyncio.sleep(SETTLE_S)
            began = time.time()
            await floor.start()
            ready = await wait_ready(floor_ports.first)
            started, _ = await times(docker, floor.id)
            assert started is not None
            _record(start["floor"], began, started, ready, 0.0)

        for i in range(iterations):
            pair = [tether_start, floor_start]
            for arm in pair if i % 2 == 0 else pair[::-1]:
                await arm()

        async def tether_fresh(i: int, arm: str) -> None:
            name = f"fresh-{arm.replace('_', '-')}-{i}"
            await tether.store.create_project(name, OWNER)
            write = await tether.deploy(name, spec=SPEC)
            ready = (await tether.converged([write], "Ready"))[name]
            started, _ = await times(docker, await tether.container_of(name))
            assert started is not None
            _record(fresh[arm], write.acked, started, ready, write.acked - write.began)
            await tether.destroy(name)
            await tether.gone(name)

        async def floor_fresh(i: int) -> None:
            began = time.time()
            container = await docker.containers.create(
                container_config(floor_ports.last, labels), name=f"bench-{run.id}-fresh-{i}"
            )
            await container.start()
            ready = await wait_ready(floor_ports.last)
            started, _ = await times(docker, container.id)
            assert started is not None
            _record(fresh["floor"], began, started, ready, 0.0)
            await container.delete(force=True)

        for i in range(iterations):
            arms: list[Any] = [lambda i=i: tether_fresh(i, "tether"), lambda i=i: floor_fresh(i)]
            for arm in arms if i % 2 == 0 else arms[::-1]:
                await arm()
    finally:
        await tether.close()
        await operator.stop()
        await run.remove_containers(scenario)
    return {"iterations": iterations, "start_from_stopped": start, "fresh_deploy": fresh}


def _record(
    arm: dict[str, list[float]], t0: float, started: float, ready: float, write: float
) -> None:
    arm["running"].append((started - t0) * 1000)
    arm["ready"].append((ready - t0) * 1000)
    arm["write"].append(write * 1000)
