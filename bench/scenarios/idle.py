"""3. Idle cost and 5. drift repair, on one installation of N converged running projects.

Idle: nothing changes for a window; the operator's CPU time (/proc, user + system), its RSS, the
Docker calls it makes (counted at `DockerDriver.call`), and the statements its Postgres role runs
(pg_stat_statements). dockerd's CPU time over the same window is given for scale. Then py-spy
samples the operator for a while (outside the measured window) to show where idle CPU goes, and
the cost of one endpoint probe is measured in this process: tether's prober against the
floor's bare asyncio HTTP/1.0 GET, over the same endpoints.

Drift: a container SIGKILLed from outside, until it runs again (its new StartedAt), measured from
before the kill; one kill per project (a second kill of the same project within 10 minutes is a
crash loop, which tether delays by design). Baseline, interleaved: kill a container and start it
again at once with aiodocker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiodocker

from docker_floor import container_config, probe, start_with_retry, times, wait_ready
from harness import OPERATOR_ROLE, Run, pid_of, process_cpu_seconds
from measures import summary
from profiling import record, summarize
from tether.api.models import HttpCheck
from tether.operator.health import Prober
from tether_side import OperatorProcess, Tether, docker_calls, passes

RSS_EVERY_S = 5.0
KILL_SETTLE_S = 0.5
PROBE_CONCURRENCY = 32  # tether.operator.service.PROBE_CONCURRENCY


async def measure(
    run: Run, docker: aiodocker.Docker, projects: int, window_s: float, kills: int
) -> dict[str, Any]:
    scenario = "idle"
    database = await run.database(scenario)
    ports = run.ports(projects + 4)
    floor_port = run.ports(1).first
    installation = run.installation(scenario)
    operator = OperatorProcess(run, database, installation, ports, scenario)
    await operator.start()
    tether = await Tether.open(database, ports, docker, installation)
    names = [f"i{i:03d}" for i in range(projects)]
    results: dict[str, Any] = {"projects": projects, "window_s": window_s}
    try:
        began = time.monotonic()
        await tether.converged(await tether.create(names, start=True), "Ready", 600)
        results["setup_s"] = round(time.monotonic() - began, 1)
        await asyncio.sleep(15)  # the tail of the setup: events of the last starts
        results["idle"] = await _idle_window(run, operator, window_s)
        results["profile"] = await _profile(run, operator, 30 if run.quick else 65)
        hosts = [ports.first + i for i in range(projects)]  # `create` allocates from the start
        results["probe_cost"] = await _probe_cost(hosts)
        results["drift"] = await _drift(run, docker, tether, names[:kills], floor_port)
    finally:
        await tether.close()
        await operator.stop()
        await run.remove_containers(scenario)
    return results


async def _idle_window(run: Run, operator: OperatorProcess, window_s: float) -> dict[str, Any]:
    dockerd = pid_of("dockerd")
    await run.reset_statements()
    before = await operator.metrics()
    cpu0 = operator.cpu_seconds()
    dockerd0 = process_cpu_seconds(dockerd) if dockerd else 0.0
    began = time.monotonic()
    rss = [operator.rss_bytes()]
    while time.monotonic() - began < window_s:
        await asyncio.sleep(min(RSS_EVERY_S, window_s - (time.monotonic() - began)))
        rss.append(operator.rss_bytes())
    elapsed = time.monotonic() - began
    cpu = operator.cpu_seconds() - cpu0
    dockerd_cpu = (process_cpu_seconds(dockerd) - dockerd0) if dockerd else None
    after = await operator.metrics()
    statements = await run.statements(OPERATOR_ROLE)
    calls = docker_calls(before, after)
    total_statements = sum(statements.values())
    return {
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "cpu_pct_of_core": 100 * cpu / elapsed,
        "docker_calls": calls,
        "docker_calls_per_s": sum(calls.values()) / elapsed,
        "statements": dict(sorted(statements.items(), key=lambda kv: -kv[1])),
        "statements_per_s": total_statements / elapsed,
        "queries_per_s": sum(
            n for q, n in statements.items() if q.upper() not in ("BEGIN", "COMMIT")
        )
        / elapsed,
        "rss_max_mb": max(rss) / 2**20,
        "rss_end_mb": rss[-1] / 2**20,
        "passes": passes(before, after),
        "dockerd_cpu_pct_of_core": (100 * dockerd_cpu / elapsed)
        if dockerd_cpu is not None
        else None,
    }


async def _profile(run: Run, operator: OperatorProcess, seconds: float) -> dict[str, Any]:
    cpu0 = operator.cpu_seconds()
    raw = await record(operator.pid, seconds, run.out / "profile-idle.txt", rate=250)
    cpu = operator.cpu_seconds() - cpu0
    if raw is None:
        return {"error": "py-spy could not record (see bench/out/*/profile-idle.txt.err)"}
    return {"seconds": seconds, "cpu_s": cpu, **summarize(raw)}


async def _probe_cost(ports: list[int]) -> dict[str, Any]:
    """CPU time per endpoint probe: tether's Prober vs the floor's bare asyncio GET."""
    check = HttpCheck(type="http", path="/healthz")
    prober = Prober("127.0.0.1")
    slots = asyncio.Semaphore(PROBE_CONCURRENCY)

    async def tether_probe(port: int) -> bool:
        async with slots:
            return await prober.healthy(check, 8080, port)

    async def bare_probe(port: int) -> bool:
        async with slots:
            return await probe(port)

    costs: dict[str, Any] = {}
    for _ in range(2):  # the first round warms up both
        for name, one in (("tether_prober", tether_probe), ("bare_asyncio", bare_probe)):
            cpu0, wall0 = time.process_time(), time.monotonic()
            answered = await asyncio.gather(*(one(p) for p in ports))
            costs[name] = {
                "cpu_ms_per_probe": 1000 * (time.process_time() - cpu0) / len(ports),
                "wall_s": time.monotonic() - wall0,
                "healthy": sum(answered),
                "probes": len(ports),
            }
    return costs


async def _drift(
    run: Run, docker: aiodocker.Docker, tether: Tether, names: list[str], floor_port: int
) -> dict[str, Any]:
    floor = await docker.containers.create(
        container_config(floor_port, run.labels("idle")), name=f"bench-{run.id}-drift"
    )
    await floor.start()
    await wait_ready(floor_port)
    starts = StartEvents()
    await starts.open()
    samples: dict[str, list[float]] = {"tether": [], "floor": []}
    try:

        async def tether_kill(name: str) -> None:
            cid = await tether.container_of(name)
            started = starts.expect(cid)
            began = time.time()
            await docker.containers.container(cid).kill(signal="SIGKILL")
            await asyncio.wait_for(started, 60)
            at, _ = await times(docker, cid)
            assert at is not None
            samples["tether"].append((at - began) * 1000)

        async def floor_kill() -> None:
            started = starts.expect(floor.id)
            began = time.time()
            await floor.kill(signal="SIGKILL")
            await start_with_retry(docker, floor.id)
            await asyncio.wait_for(started, 60)
            at, _ = await times(docker, floor.id)
            assert at is not None
            samples["floor"].append((at - began) * 1000)

        for i, name in enumerate(names):
            arms = [lambda name=name: tether_kill(name), floor_kill]
            for arm in arms if i % 2 == 0 else arms[::-1]:
                await arm()
                await asyncio.sleep(KILL_SETTLE_S)
    finally:
        await starts.close()
    return {
        "kills": len(names),
        "samples_ms": samples,
        "tether": summary(samples["tether"]),
        "floor": summary(samples["floor"]),
    }


class StartEvents:
    """Docker `start` events, by container id (a client of its own: aiodocker keeps one events
    stream per client)."""

    def __init__(self) -> None:
        self._docker = aiodocker.Docker()
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        subscriber = self._docker.events.subscribe(  # type: ignore[no-untyped-call]
            filters={"type": ["container"], "event": ["start"]}
        )
        self._task = asyncio.create_task(self._follow(subscriber))
        await asyncio.sleep(0.2)  # the subscription is in place

    async def _follow(self, subscriber: Any) -> None:
        while True:
            event = await subscriber.get()
            if event is None:
                return
            future = self._waiting.pop(event.get("id", ""), None)
            if future is not None and not future.done():
                future.set_result(None)

    def expect(self, container_id: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[container_id] = future
        return future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self._docker.events.stop()  # type: ignore[no-untyped-call]
        await self._docker.close()
