"""4. Growth: one full resync pass (`Operator.resync()`) at 100, 1 000 and 10 000 projects, of
which 10 run and the rest are desired stopped (no container).

The operator process converges 10 running projects and one stopped one; the stopped one is then
cloned in SQL (its project, deployment and status rows, the status the operator wrote for it) up to
each size, and the operator process stops. The resync is then called in this process, on an
`Operator` built as `tether operator` builds it: its time (wall and CPU of this process), its
Docker calls (counted at `DockerDriver.call`) and its statements (pg_stat_statements of its role),
with `desired_all()` and `list_all()` timed on their own, and a pyinstrument profile of a resync
at the largest size. The collector's thresholds are tuned as `tether operator` tunes them, and
the resync is also timed with Python's cyclic garbage collector paused.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiodocker
import asyncpg

from harness import CLIENT_ROLE, OPERATOR_ROLE, Run
from measures import summary
from tether.api.settings import Settings
from tether.api.store import Store
from tether.operator.engine.docker.driver import DockerDriver
from tether.operator.runtimes import engine_runtime
from tether.operator.serve import tune_garbage_collector
from tether.operator.service import Operator
from tether_side import OperatorProcess, Tether, docker_url

RUNNING = 10
CLONE_PORT_BASE = 30000  # host ports of stopped clones: stored, never published

CLONE = """
INSERT INTO projects (name, owner, desired_state, target_version, restart_token, generation,
                      host_port, created_at, updated_at)
SELECT 'gs-' || lpad(i::text, 5, '0'), owner, desired_state, target_version, restart_token,
       generation, $3 + i, created_at, updated_at
FROM projects, generate_series($1::int, $2::int - 1) AS i WHERE name = 'g-stop';
INSERT INTO deployments (project, version, image, command, env, port, health, ready_deadline_s,
                         stop_grace_s, memory_mb, cpus, created_by, created_at)
SELECT 'gs-' || lpad(i::text, 5, '0'), version, image, command, env, port, health,
       ready_deadline_s, stop_grace_s, memory_mb, cpus, created_by, created_at
FROM deployments, generate_series($1::int, $2::int - 1) AS i WHERE project = 'g-stop';
INSERT INTO status (project, observed_generation, phase, conditions, running_version,
                    container_id, ready_container_id, endpoint, attempts, next_attempt_at,
                    last_error, crash_count, last_exit_code, last_crash_at, oom_killed,
                    failed_version, updated_at)
SELECT 'gs-' || lpad(i::text, 5, '0'), observed_generation, phase, conditions, running_version,
       container_id, ready_container_id, endpoint, attempts, next_attempt_at, last_error,
       crash_count, last_exit_code, last_crash_at, oom_killed, failed_version, updated_at
FROM status, generate_series($1::int, $2::int - 1) AS i WHERE project = 'g-stop';
"""


async def measure(
    run: Run, docker: aiodocker.Docker, sizes: tuple[int, ...], repeats: int
) -> dict[str, Any]:
    scenario = "growth"
    database = await run.database(scenario)
    ports = run.ports(RUNNING + 4)
    installation = run.installation(scenario)
    operator_process = OperatorProcess(run, database, installation, ports, scenario)
    await operator_process.start()
    tether = await Tether.open(database, ports, docker, installation)
    results: dict[str, Any] = {"running": RUNNING, "sizes": list(sizes), "repeats": repeats}
    store = driver = operator = None
    try:
        running = [f"g-run-{i}" for i in range(RUNNING)]
        await tether.converged(await tether.create(running, start=True), "Ready")
        await tether.converged(await tether.create(["g-stop"], start=False), "Stopped")
        # The in-process operator below reads the routes of the proxy the process started.
        await operator_process.stop_operator()

        settings = Settings(
            database_url=database.dsn(OPERATOR_ROLE),
            installation_id=installation,
            port_range=f"{ports.first}-{ports.last}",
            docker_url=docker_url(),
            proxy_dir=str(operator_process.proxy_dir),
            proxy_socket=str(operator_process.proxy_dir / "admin.sock"),
        )
        store = await Store.connect(settings.database_url, settings.ports)
        driver = DockerDriver(settings.docker_url, installation, concurrency=16)
        calls: Counter[str] = Counter()
        original = driver.call

        async def counted(operation: str, call: Callable[[], Awaitable[Any]], **kw: Any) -> Any:
            calls[operation] += 1
            return await original(operation, call, **kw)

        driver.call = counted  # type: ignore[method-assign]
        operator = Operator(settings, store, engine_runtime(settings, driver))
        tune_garbage_collector()  # as serve_operator does
        conn = await asyncpg.connect(database.dsn(CLIENT_ROLE))
        total = RUNNING + 1
        try:
            for size in sizes:
                if size > total:
                    await conn.execute(
                        CLONE.replace("$1::int", str(total))
                        .replace("$2::int", str(size))
                        .replace("$3", str(CLONE_PORT_BASE))
                    )
                    await conn.execute("ANALYZE")
                    total = size
                await operator.resync()  # warm-up
                walls, cpus, samples = [], [], []
                for _ in range(repeats):
                    await run.reset_statements()
                    calls.clear()
                    wall0, cpu0 = time.perf_counter(), time.process_time()
                    queued = await operator.resync()
                    walls.append((time.perf_counter() - wall0) * 1000)
                    cpus.append((time.process_time() - cpu0) * 1000)
                    statements = await run.statements(OPERATOR_ROLE)
                    samples.append(
                        {
                            "queued": queued,
                            "docker_calls": dict(calls),
                            "statements": sum(statements.values()),
                        }
                    )
                gc_off = []
                for _ in range(3):  # the same, with Python's cyclic GC paused
                    gc.collect()
                    gc.disable()
                    try:
                        wall0 = time.perf_counter()
                        await operator.resync()
                        gc_off.append((time.perf_counter() - wall0) * 1000)
                    finally:
                        gc.enable()
                wall0 = time.perf_counter()
                snapshots = await store.desired_all()
                query_ms = (time.perf_counter() - wall0) * 1000
                wall0 = time.perf_counter()
                await driver.list_all()
                list_ms = (time.perf_counter() - wall0) * 1000
                results[str(size)] = {
                    "projects": len(snapshots),
                    "wall_ms": summary(walls),
                    "cpu_ms": summary(cpus),
                    "wall_ms_gc_off": summary(gc_off),
                    "desired_all_ms": query_ms,
                    "list_all_ms": list_ms,
                    "queued": samples[-1]["queued"],
                    "docker_calls": samples[-1]["docker_calls"],
                    "statements": samples[-1]["statements"],
                    "samples": samples,
                }
            results["profile"] = await _profile(run, operator, sizes[-1])
        finally:
            await conn.close()
    finally:
        await tether.close()
        if driver is not None:
            await driver.close()
        if store is not None:
            await store.close()
        await operator_process.stop()
        await run.remove_containers(scenario)
    return results


async def _profile(run: Run, operator: Operator, size: int) -> dict[str, Any]:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    await operator.resync()
    profiler.stop()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    path = run.out / "profile-growth.txt"
    path.write_text(text)
    return {"size": size, "text": text}
