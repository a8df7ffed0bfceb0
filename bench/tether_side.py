"""tether as a user drives it: desired-state writes through the store (acknowledged when the
write's transaction has committed), the operator running as its own process, and what the operator
reports read back from Postgres.

Convergence times come from the operator's own records, not from polling: the `converged` event
(`Ready` or `Stopped`) it writes for a project at a generation carries the time of that status
write. Docker's StartedAt/FinishedAt give the time a container actually changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from harness import (
    BENCH,
    CLIENT_ROLE,
    IMAGE,
    OPERATOR_ROLE,
    PYTHON,
    Database,
    Run,
    free_port,
    process_cpu_seconds,
    process_rss_bytes,
)
from tether.api.models import DeploymentSpec, DesiredState, HttpCheck, Principal
from tether.api.store import PortRange, Store
from tether.operator.labels import LABEL_INSTALLATION, LABEL_PROJECT

OWNER = Principal(owner="bench")
# What the README's tour deploys: the test workload, its port, an HTTP health check (defaults).
SPEC = DeploymentSpec(image=IMAGE, port=8080, health=HttpCheck(type="http", path="/healthz"))

CONVERGED_AT = """
SELECT e.project, min(e.created_at) AS at
FROM events e
JOIN unnest($1::text[], $2::bigint[]) AS w(name, generation)
  ON e.project = w.name AND e.generation = w.generation
WHERE e.kind = 'converged' AND e.reason = $3
GROUP BY e.project
"""

STATUS_OF = """
SELECT s.project, s.phase, s.observed_generation, s.last_error, p.generation
FROM projects p LEFT JOIN status s ON s.project = p.name
WHERE p.name = ANY($1::text[])
"""


class NotConverged(Exception):
    pass


@dataclass
class Write:
    name: str
    generation: int
    began: float  # Unix seconds, before the write was sent
    acked: float  # Unix seconds, when its transaction had committed


class Tether:
    """Writes desired state, waits for the operator's reports."""

    def __init__(
        self,
        store: Store,
        reader: asyncpg.Connection,
        docker: aiodocker.Docker | None,
        installation: str,
    ) -> None:
        self.store = store
        self._reader = reader
        self._docker = docker
        self.installation = installation
        self._changed = asyncio.Event()

    @classmethod
    async def open(
        cls,
        database: Database,
        ports: PortRange,
        docker: aiodocker.Docker | None,
        installation: str,
    ) -> Tether:
        store = await Store.connect(database.dsn(CLIENT_ROLE), ports)
        reader = await asyncpg.connect(database.dsn(CLIENT_ROLE))
        tether = cls(store, reader, docker, installation)
        await reader.add_listener("tether_status", lambda *_: tether._changed.set())
        return tether

    async def close(self) -> None:
        await self._reader.close()
        await self.store.close()

    # Writes

    async def create(self, names: list[str], *, start: bool, concurrency: int = 8) -> list[Write]:
        async def one(name: str) -> Write:
            await self.store.create_project(name, OWNER)
            return await self.deploy(name, start=start)

        return await self._many(names, one, concurrency)

    async def deploy(self, name: str, *, start: bool = True, spec: DeploymentSpec = SPEC) -> Write:
        began = time.time()
        result, _ = await self.store.deploy(name, spec, OWNER, start=start)
        return Write(name, result.project.generation, began, time.time())

    async def set_running(self, name: str, running: bool) -> Write:
        state = DesiredState.RUNNING if running else DesiredState.STOPPED
        began = time.time()
        result = await self.store.set_desired_state(name, state, OWNER)
        if not result.changed:
            raise AssertionError(f"{name}: a benchmark write changed nothing ({result.message})")
        return Write(name, result.project.generation, began, time.time())

    async def set_many(self, names: list[str], running: bool, concurrency: int = 8) -> list[Write]:
        return await self._many(names, lambda n: self.set_running(n, running), concurrency)

    async def destroy(self, name: str) -> None:
        await self.store.destroy(name, OWNER)

    @staticmethod
    async def _many(names: list[str], one: Any, concurrency: int) -> list[Write]:
        slots = asyncio.Semaphore(concurrency)

        async def bounded(name: str) -> Write:
            async with slots:
                result: Write = await one(name)
                return result

        return list(await asyncio.gather(*(bounded(n) for n in names)))

    # What the operator reports

    async def converged(
        self, writes: list[Write], reason: str, timeout_s: float = 120.0
    ) -> dict[str, float]:
        """When each write's project converged (`Ready` or `Stopped`) at its generation, as
        recorded by the operator (Unix seconds). Raises NotConverged after `timeout_s`."""
        names = [w.name for w in writes]
        generations = [w.generation for w in writes]
        deadline = time.monotonic() + timeout_s
        while True:
            self._changed.clear()
            rows = await self._reader.fetch(CONVERGED_AT, names, generations, reason)
            found = {r["project"]: r["at"].timestamp() for r in rows}
            if len(found) == len(writes):
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [n for n in names if n not in found]
                raise NotConverged(
                    f"{len(missing)} of {len(names)} not {reason} after {timeout_s} s: "
                    f"{await self.describe(missing[:5])}"
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 1.0)):
                    await self._changed.wait()
            await asyncio.sleep(0.05)  # a burst of status writes: one query for all of them

    async def describe(self, names: list[str]) -> str:
        rows = await self._reader.fetch(STATUS_OF, names)
        return "; ".join(
            f"{r['project']}: {r['phase']} at gen {r['observed_generation']}/{r['generation']}"
            f" {r['last_error'] or ''}".strip()
            for r in rows
        )

    async def gone(self, name: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while await self._reader.fetchval("SELECT 1 FROM projects WHERE name = $1", name):
            if time.monotonic() > deadline:
                raise NotConverged(f"{name} was not destroyed within {timeout_s} s")
            await asyncio.sleep(0.05)

    async def containers(self, name: str) -> list[dict[str, Any]]:
        assert self._docker is not None
        listed = await self._docker.containers.list(
            all=True,
            filters={
                "label": [f"{LABEL_INSTALLATION}={self.installation}", f"{LABEL_PROJECT}={name}"]
            },
        )
        return [c._container for c in listed]

    async def container_of(self, name: str) -> str:
        listed = await self.containers(name)
        if len(listed) != 1:
            raise AssertionError(f"{name}: expected one container, found {len(listed)}")
        return str(listed[0]["Id"])


def docker_url() -> str:
    """The engine this run uses (the harness, its baselines and tether all use the same one)."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


class OperatorProcess:
    """`tether operator` as a child process with a metrics endpoint (bench/operator_process.py)."""

    def __init__(
        self,
        run: Run,
        database: Database,
        installation: str,
        ports: PortRange,
        scenario: str,
        trace: Path | None = None,
        **settings: str,
    ) -> None:
        """`trace`: where the operator appends its trace (bench/phases.py reads it)."""
        self._run = run
        self._database = database
        self.metrics_port = free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("TETHER_") and key != "DOCKER_HOST"
        }
        env.update(
            TETHER_DATABASE_URL=database.dsn(OPERATOR_ROLE),
            TETHER_DOCKER_URL=docker_url(),
            TETHER_INSTALLATION_ID=installation,
            TETHER_PORT_RANGE=f"{ports.first}-{ports.last}",
            TETHER_PUBLISH_ADDRESS="127.0.0.1",
            TETHER_LOG_FORMAT="json",
            # Its own health/metrics endpoint (newer tethers serve one): never the default port.
            TETHER_OPERATOR_HOST="127.0.0.1",
            TETHER_OPERATOR_PORT=str(free_port()),
            BENCH_METRICS_PORT=str(self.metrics_port),
        )
        # After the defaults: a setting may replace one of them (docker_url: a Swarm manager's).
        env.update({f"TETHER_{k.upper()}": v for k, v in settings.items()})
        if trace is not None:
            env["BENCH_TRACE"] = str(trace)
        # The projects' endpoints belong to a proxy of the installation's own (`tether proxy`).
        proxy_dir = Path(f"/tmp/tether-bench-{run.id}-{scenario}-proxy")
        env.update(
            TETHER_PROXY_DIR=str(proxy_dir), TETHER_PROXY_SOCKET=str(proxy_dir / "admin.sock")
        )
        self.proxy_dir = proxy_dir
        self._proxy_socket = proxy_dir / "admin.sock"
        self.proxy: Any = None
        self._env = env
        self._log = f"operator-{scenario}.log"
        self.child: Any = None

    @property
    def pid(self) -> int:
        return int(self.child.pid)

    async def start(self) -> None:
        self.proxy = self._run.spawn(
            [str(Path(PYTHON).parent / "tether"), "proxy"],
            env=self._env,
            log_name=self._log.replace("operator-", "proxy-"),
        )
        deadline = time.monotonic() + 30
        while not self._proxy_socket.exists():
            if self.proxy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the proxy did not start; see {self._log}")
            await asyncio.sleep(0.1)
        self.child = self._run.spawn(
            [PYTHON, str(BENCH / "operator_process.py")], env=self._env, log_name=self._log
        )
        conn = await asyncpg.connect(self._database.dsn(CLIENT_ROLE))
        try:
            deadline = time.monotonic() + 30
            while not await conn.fetchval("SELECT 1 FROM operator_lease WHERE expires_at > now()"):
                if self.child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the operator did not start; see {self._log}")
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        await asyncio.sleep(1.0)  # its first resync, from taking the lease

    async def stop_operator(self) -> int:
        """The operator only: its proxy goes on serving the routes (and answering reads of them)."""
        return await self._run.stop_child(self.child)

    async def stop(self) -> int:
        code = await self.stop_operator()
        if self.proxy is not None:
            await self._run.stop_child(self.proxy)
        return code

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return process_rss_bytes(self.pid)

    async def metrics(self) -> dict[str, float]:
        """Every sample of the operator's Prometheus registry, keyed `name{labels}`."""

        def fetch() -> str:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                return str(response.read().decode())

        text = await asyncio.to_thread(fetch)
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}"] = sample.value
        return samples


def docker_calls(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """Docker calls per operation between two metric snapshots."""
    calls: dict[str, int] = {}
    for key, value in after.items():
        if key.startswith("bench_docker_calls_total{"):
            operation = key.split("operation=", 1)[1].rstrip("}")
            calls[operation] = int(value - before.get(key, 0.0))
    return {k: v for k, v in calls.items() if v}


def docker_seconds(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Wall seconds spent in Docker calls per operation between two metric snapshots."""
    spent: dict[str, float] = {}
    for key, value in after.items():
        if key.startswith("bench_docker_call_seconds_sum{"):
            operation = key.split("operation=", 1)[1].rstrip("}")
            spent[operation] = value - before.get(key, 0.0)
    return {k: v for k, v in spent.items() if v}


def passes(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for key, value in after.items():
        if key.startswith("tether_passes_total{"):
            result = key.split("result=", 1)[1].rstrip("}")
            counted[result] = int(value - before.get(key, 0.0))
    return {k: v for k, v in counted.items() if v}
