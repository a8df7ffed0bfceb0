"""2. Bulk: N projects stopped → running and running → stopped, wall time until all converged.

Three systems, each with its own N containers of the same image and configuration, created and
cycled once beforehand (untimed), then measured in turn (the order rotates every repetition), so
that only one system's containers are ever running:

- tether: N desired-state writes (8 at a time), until the operator has recorded every project
  `Ready` (resp. `Stopped`); the operator runs with its defaults (12 workers; 8 container
  changes and 16 other Docker calls in flight at once).
- floor: direct aiodocker start (resp. stop) with 8 at a time, like tether's 8 changes; each
  endpoint is polled from the moment its start returned.
- docker-compose: `up -d` (resp. `stop`) of the same N services; endpoints polled once it returns.
- floor_looks (only when `systems` names it): the floor's containers and changes, each between an
  inspect before and one after, as a tether pass makes them: what observing afresh costs Docker.

"running" is the last container's StartedAt (resp. FinishedAt) from `docker inspect`.

With `what_if` ((setting, value) pairs, e.g. [("workers", "8")]), one more tether installation
per pair, in the same rotation at every N: tether as shipped with that one setting changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiodocker

import phases
from docker_floor import STOP_GRACE_S, bounded, container_config, times, wait_ready
from harness import IMAGE, CpuMeter, Run, command, load_average
from tether_side import (
    NotConverged,
    OperatorProcess,
    Tether,
    docker_calls,
    docker_seconds,
    docker_url,
    passes,
)

CONCURRENCY = 8  # tether's default TETHER_DOCKER_CHANGES
LOOKS = 16  # and its TETHER_DOCKER_CONCURRENCY, the cap on other calls
PAUSE_S = 1.0


def what_if_key(setting: str, value: str) -> str:
    """The system name of a what-if installation in the results."""
    return f"tether_{setting}_{value}"


class Installation:
    """One tether installation of N projects: its database, operator process and client."""

    def __init__(self, run: Run, scenario: str, count: int, **settings: str) -> None:
        self.run, self.scenario, self.settings = run, scenario, settings
        self.trace = run.out / f"trace-{scenario}.jsonl"
        self.names = [f"b{i:03d}" for i in range(count)]
        self.ports = run.ports(count + 4)
        self.operator: OperatorProcess | None = None
        self.tether: Tether | None = None

    async def open(self, docker: aiodocker.Docker) -> None:
        database = await self.run.database(self.scenario)
        installation = self.run.installation(self.scenario)
        self.operator = OperatorProcess(
            self.run,
            database,
            installation,
            self.ports,
            self.scenario,
            trace=self.trace,
            **self.settings,
        )
        await self.operator.start()
        self.tether = await Tether.open(database, self.ports, docker, installation)
        # Warm-up, untimed: every container exists and has run once.
        tether = self.tether
        await tether.converged(await tether.create(self.names, start=True), "Ready", 600)
        await tether.converged(await tether.set_many(self.names, False), "Stopped", 600)

    async def close(self) -> None:
        if self.tether is not None:
            await self.tether.close()
        if self.operator is not None:
            await self.operator.stop()
        await self.run.remove_containers(self.scenario)


async def measure(
    run: Run,
    docker: aiodocker.Docker,
    sizes: tuple[int, ...],
    repeats: tuple[int, ...],
    what_if: list[tuple[str, str]],
    systems: tuple[str, ...] = ("tether", "floor", "compose"),
) -> dict[str, Any]:
    """`systems`: which of tether, floor and compose take part (each round rotates them)."""
    scenario = "bulk"
    most = max(sizes)
    main = Installation(run, scenario, most)
    what_ifs = {
        what_if_key(setting, value): Installation(
            run, f"bulk{setting.replace('_', '')}{value}", most, **{setting: value}
        )
        for setting, value in what_if
    }
    floor_ports, compose_ports = run.ports(most), run.ports(most)
    labels = run.labels(scenario)
    compose = Compose(run, scenario, compose_ports.first, most, labels)
    floor_ids: list[str] = []
    results: dict[str, Any] = {
        "sizes": list(sizes),
        "repeats": list(repeats),
        "concurrency": CONCURRENCY,
        "what_if": {what_if_key(s, v): f"TETHER_{s.upper()}={v}" for s, v in what_if},
    }
    try:
        await main.open(docker)
        for installation in what_ifs.values():
            await installation.open(docker)

        async def create_floor(i: int) -> str:
            container = await docker.containers.create(
                container_config(floor_ports.first + i, labels), name=f"bench-{run.id}-floor-{i}"
            )
            await container.start()
            await wait_ready(floor_ports.first + i)
            await container.stop(t=STOP_GRACE_S)
            return str(container.id)

        floor_ids = await bounded(CONCURRENCY, range(most), create_floor)
        meter = CpuMeter(docker_url())
        if "compose" in systems:
            await compose.run("up", "-d")
            await compose.run("stop")

        async def tether_cycle(n: int, installation: Installation = main) -> dict[str, Any]:
            tether, operator, names = installation.tether, installation.operator, installation.names
            assert tether is not None
            assert operator is not None
            before = await operator.metrics()
            cpu0 = operator.cpu_seconds()
            spent0 = meter.read()
            began = time.time()
            writes = await tether.set_many(names[:n], True, concurrency=CONCURRENCY)
            written = time.time()
            ready = await tether.converged(writes, "Ready", 600)
            cpu1 = operator.cpu_seconds()
            spent1 = meter.read()
            middle = await operator.metrics()
            up_writes, up_began = writes, began
            ids = [await tether.container_of(name) for name in names[:n]]
            started = [s for s, _ in await asyncio.gather(*(times(docker, c) for c in ids))]
            up = {
                "ready_s": max(ready.values()) - began,
                "running_s": max(s or 0.0 for s in started) - began,
                "writes_s": written - began,
                "docker_calls": docker_calls(before, middle),
                "docker_seconds": docker_seconds(before, middle),
                "operator_cpu_s": cpu1 - cpu0,
                "cpu": meter.spent(spent0, spent1),
                "passes": passes(before, middle),
            }
            await asyncio.sleep(PAUSE_S)  # the trace's last lines follow the status writes
            up["trace"] = phases.breakdown(
                installation.trace, list(up_writes), "start", up_began, time.time()
            )
            began = time.time()
            writes = await tether.set_many(names[:n], False, concurrency=CONCURRENCY)
            written = time.time()
            stopped = await tether.converged(writes, "Stopped", 600)
            cpu2 = operator.cpu_seconds()
            spent2 = meter.read()
            after = await operator.metrics()
            finished = [f for _, f in await asyncio.gather(*(times(docker, c) for c in ids))]
            down = {
                "converged_s": max(stopped.values()) - began,
                "exited_s": max(f or 0.0 for f in finished) - began,
                "writes_s": written - began,
                "docker_calls": docker_calls(middle, after),
                "docker_seconds": docker_seconds(middle, after),
                "operator_cpu_s": cpu2 - cpu1,
                "cpu": meter.spent(spent1, spent2),
                "passes": passes(middle, after),
            }
            await asyncio.sleep(PAUSE_S)
            down["trace"] = phases.breakdown(installation.trace, writes, "stop", began, time.time())
            return {"start": up, "stop": down}

        async def floor_cycle(n: int, looks: bool = False) -> dict[str, Any]:
            """`looks`: each change between two inspects of its container, as a pass makes
            them (observe before, look again after), and under the same caps as tether's."""
            slots, looking = asyncio.Semaphore(CONCURRENCY), asyncio.Semaphore(LOOKS)

            async def look(cid: str) -> None:
                if looks:
                    async with looking:
                        await docker.containers.container(cid).show()

            async def change(cid: str, call: Callable[[], Awaitable[Any]]) -> None:
                await look(cid)
                async with slots:
                    await call()
                await look(cid)

            async def start(i: int) -> float:
                await change(floor_ids[i], docker.containers.container(floor_ids[i]).start)
                return await wait_ready(floor_ports.first + i, interval_s=0.01)

            def stop(cid: str) -> Awaitable[None]:
                return change(cid, lambda: docker.containers.container(cid).stop(t=STOP_GRACE_S))

            spent0 = meter.read()
            began = time.time()
            ready = await asyncio.gather(*(start(i) for i in range(n)))
            spent1 = meter.read()
            started = [
                s for s, _ in await asyncio.gather(*(times(docker, c) for c in floor_ids[:n]))
            ]
            up = {
                "ready_s": max(ready) - began,
                "running_s": max(s or 0.0 for s in started) - began,
                "cpu": meter.spent(spent0, spent1),
            }
            await asyncio.sleep(PAUSE_S)
            spent0 = meter.read()
            began = time.time()
            await asyncio.gather(*(stop(cid) for cid in floor_ids[:n]))
            returned = time.time()
            spent1 = meter.read()
            finished = [
                f for _, f in await asyncio.gather(*(times(docker, c) for c in floor_ids[:n]))
            ]
            down = {
                "converged_s": returned - began,
                "exited_s": max(f or 0.0 for f in finished) - began,
                "cpu": meter.spent(spent0, spent1),
            }
            return {"start": up, "stop": down}

        async def compose_cycle(n: int) -> dict[str, Any]:
            services = compose.services[:n]
            began = time.time()
            await compose.run("up", "-d", *services)
            returned = time.time()
            ready = await asyncio.gather(
                *(wait_ready(compose_ports.first + i, interval_s=0.01) for i in range(n))
            )
            ids = await compose.ids(services)
            started = [s for s, _ in await asyncio.gather(*(times(docker, c) for c in ids))]
            up = {
                "ready_s": max(ready) - began,
                "running_s": max(s or 0.0 for s in started) - began,
                "returned_s": returned - began,
            }
            await asyncio.sleep(PAUSE_S)
            began = time.time()
            await compose.run("stop", *services)
            returned = time.time()
            finished = [f for _, f in await asyncio.gather(*(times(docker, c) for c in ids))]
            down = {
                "converged_s": returned - began,
                "exited_s": max(f or 0.0 for f in finished) - began,
            }
            return {"start": up, "stop": down}

        cycles: dict[str, Any] = {
            "tether": tether_cycle,
            "floor": floor_cycle,
            "floor_looks": lambda n: floor_cycle(n, looks=True),
            "compose": compose_cycle,
        }
        for name, installation in what_ifs.items():
            cycles[name] = lambda n, installation=installation: tether_cycle(n, installation)
        for index, n in enumerate(sizes):
            order = [s for s in cycles if s in systems or s in what_ifs]
            per_system: dict[str, list[dict[str, Any]]] = {system: [] for system in order}
            results[str(n)] = per_system  # filled as it goes: a failure keeps what was measured
            for rep in range(repeats[index]):
                shift = (index + rep) % len(order)
                for system in order[shift:] + order[:shift]:
                    try:
                        async with asyncio.timeout(max(180.0, 1.5 * n)):
                            load = load_average()
                            measured = await cycles[system](n)
                            measured["load"] = load
                            per_system[system].append(measured)
                    except (TimeoutError, NotConverged) as exc:
                        # Docker Engine 20.10 can deadlock when many containers exit at once
                        # (moby/moby#46661): nothing more can be measured on this engine.
                        results["failed"] = f"{system}, {n} projects: {exc or 'timed out'}"
                        return results
                    await asyncio.sleep(PAUSE_S)
    finally:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(180):
                await main.close()
                for installation in what_ifs.values():
                    await installation.close()
                await compose.run("down", check=False)
                await run.remove_containers(scenario)
    return results


class Compose:
    """docker-compose (v1, Debian's package) over N services like tether's containers."""

    def __init__(
        self, run: Run, scenario: str, first_port: int, count: int, labels: dict[str, str]
    ) -> None:
        self.project = f"bench{run.id}{scenario}"
        self.services = [f"s{i:03d}" for i in range(count)]
        self.file = run.out / f"compose-{scenario}.json"  # JSON is YAML
        spec = {
            "version": "2.4",
            "services": {
                service: {
                    "image": IMAGE,
                    "network_mode": "bridge",  # the default bridge, like the other two
                    "ports": [f"127.0.0.1:{first_port + i}:8080"],
                    "labels": labels,
                    "stop_grace_period": f"{STOP_GRACE_S}s",
                    "restart": "no",
                }
                for i, service in enumerate(self.services)
            },
        }
        self.file.write_text(json.dumps(spec, indent=1))
        self._log = run.out / f"compose-{scenario}.log"

    async def run(self, *args: str, check: bool = True) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
        if len(self.services) > 60:
            # docker-compose 1.x deadlocks when a project has more services than its parallel
            # limit (64 by default): docker/compose#5864, #8161, #8226.
            env["COMPOSE_PARALLEL_LIMIT"] = str(2 * len(self.services) + 8)
        code, out = await command(
            ["docker-compose", "--ansi", "never", "-p", self.project, "-f", str(self.file), *args],
            env=env,
            timeout_s=900,
        )
        entry = f"$ docker-compose {' '.join(args[:3])} ...\n".encode() + out
        await asyncio.to_thread(_append, self._log, entry)
        if check and code != 0:
            raise RuntimeError(f"docker-compose {args[0]} failed: {out.decode()[-500:]}")

    async def ids(self, services: list[str]) -> list[str]:
        """Container ids of these services."""
        _, out = await command(
            [
                "docker",
                "ps",
                "-a",
                "--no-trunc",
                "--filter",
                f"label=com.docker.compose.project={self.project}",
                "--format",
                '{{.ID}} {{.Label "com.docker.compose.service"}}',
            ],
            timeout_s=60,
        )
        wanted = set(services)
        pairs = [line.split() for line in out.decode().splitlines()]
        return [p[0] for p in pairs if len(p) == 2 and p[1] in wanted]


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as log:
        log.write(data)
