"""The whole stack on the swarm runtime, for one test: the HTTP API (uvicorn) and an operator on a
real Postgres, the operator driving the Swarm cluster's manager (tests/swarmcluster.py) and
routing through the test's own HAProxy; people use the `tether` CLI in-process and the HTTP API
(the web console's), and an outside actor talks to the manager directly."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import httpx
import pytest
import structlog
from cliuser import Cli
from scenarios.harness import condition, endpoint_answers, proxied, spec
from support import serving, wait_for
from swarmcluster import SwarmCluster, SwarmNode

from tether.api.app import create_app
from tether.api.models import ConditionType, DesiredSnapshot, Event
from tether.api.settings import Settings
from tether.api.store import PortRange, Store
from tether.operator.labels import LABEL_INSTALLATION, LABEL_PROJECT, LABEL_RESTART, LABEL_VERSION
from tether.operator.runtimes import open_runtime
from tether.operator.service import Operator


@dataclass
class SwarmStack:
    settings: Settings
    store: Store  # the operator's own pool
    cluster: SwarmCluster
    manager: aiodocker.Docker  # an outside actor on the Swarm manager
    cli: Cli
    console: httpx.AsyncClient
    logs: list[dict[str, Any]]
    operator: Operator

    async def snapshot(self, name: str) -> DesiredSnapshot:
        found = await self.store.desired(name)
        assert found is not None, f"no project {name}"
        return found

    async def deploy(self, name: str, **update: Any) -> None:
        created = await self.console.post("/v1/projects", json={"name": name})
        assert created.status_code in (200, 201), created.text
        answer = await self.console.post(f"/v1/projects/{name}/deployments", json=spec(**update))
        assert answer.status_code == 201, answer.text

    async def events(self, name: str) -> list[Event]:
        answer = await self.console.get(f"/v1/projects/{name}/events", params={"limit": 1000})
        assert answer.status_code == 200, answer.text
        return [Event.model_validate(e) for e in answer.json()]

    async def services(self, project: str) -> list[dict[str, Any]]:
        labels = [f"{LABEL_INSTALLATION}={self.settings.installation_id}"]
        listed = await self.manager.services.list(
            filters={"label": [*labels, f"{LABEL_PROJECT}={project}"]}
        )
        return list(listed)

    async def running_tasks(self, project: str) -> list[dict[str, Any]]:
        """The tasks of the project's services Swarm runs (and means to)."""
        names = [s["Spec"]["Name"] for s in await self.services(project)]
        if not names:
            return []
        tasks = await self.manager.tasks.list(filters={"service": names})
        return [
            t for t in tasks if t["Status"]["State"] == "running" and t["DesiredState"] == "running"
        ]

    def node_of(self, task: dict[str, Any]) -> SwarmNode:
        return self.cluster.node(task["NodeID"])

    async def converged(self, name: str) -> DesiredSnapshot | None:
        snap = await self.snapshot(name)
        status = snap.status
        if status is None or status.observed_generation != snap.project.generation:
            return None
        return snap if condition(snap, ConditionType.RECONCILING) == "False" else None

    async def running_as_desired(self, name: str) -> DesiredSnapshot | None:
        """Ready; one service of replicas 1 labelled with the target and the restart token; one
        task running, the one status names; the endpoint answering through the proxy."""
        snap = await self.converged(name)
        if snap is None or condition(snap, ConditionType.READY) != "True":
            return None
        services = await self.services(name)
        if len(services) != 1:
            return None
        [service] = services
        labels = service["Spec"]["Labels"]
        replicas = service["Spec"]["Mode"]["Replicated"]["Replicas"]
        if (
            replicas != 1
            or labels[LABEL_VERSION] != str(snap.project.target_version)
            or labels[LABEL_RESTART] != str(snap.project.restart_token)
        ):
            return None
        tasks = await self.running_tasks(name)
        if len(tasks) != 1 or tasks[0]["ID"] != snap.status.container_id:
            return None
        return snap if await endpoint_answers(snap) else None

    async def stopped_as_desired(self, name: str) -> DesiredSnapshot | None:
        snap = await self.converged(name)
        if snap is None or snap.project.desired_state != "stopped":
            return None
        services = await self.services(name)
        if any(s["Spec"]["Mode"]["Replicated"]["Replicas"] != 0 for s in services):
            return None
        return snap if not await self.running_tasks(name) else None

    async def wait_running(self, name: str, what: str, within_s: float = 90) -> DesiredSnapshot:
        found: DesiredSnapshot = await wait_for(
            lambda: self.running_as_desired(name), what, within_s=within_s, every_s=0.2
        )
        return found


@contextlib.asynccontextmanager
async def swarm_stack(
    *,
    cluster: SwarmCluster,
    database_url: str,
    api_store: Store,
    token: str,
    ports: PortRange,
    proxy_process: Any,
    capsys: pytest.CaptureFixture[str],
    config_dir: Path,
    **settings: Any,
) -> AsyncIterator[SwarmStack]:
    configured = Settings(
        database_url=database_url,
        installation_id=f"test-{uuid.uuid4().hex[:8]}",
        port_range=f"{ports.first}-{ports.last}",
        publish_address="127.0.0.1",
        docker_url=cluster.manager_url,
        runtime="swarm",
        **{"workers": 4, "lease_ttl_s": 3, **proxied(proxy_process), **settings},
    )
    operator_store = await Store.connect(database_url, ports)
    manager = aiodocker.Docker(url=cluster.manager_url)
    runtime = open_runtime(configured)
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        with structlog.testing.capture_logs() as logs:
            async with (
                serving(create_app(api_store)) as url,
                httpx.AsyncClient(
                    base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10
                ) as console,
            ):
                cli = Cli(
                    capsys,
                    {
                        "TETHER_CONFIG": str(config_dir / "config.json"),
                        "TETHER_URL": url,
                        "TETHER_TOKEN": token,
                    },
                )
                operator = Operator(configured, operator_store, runtime)
                task = asyncio.create_task(operator.run(stop))
                try:
                    yield SwarmStack(
                        configured, operator_store, cluster, manager, cli, console, logs, operator
                    )
                finally:
                    stop.set()
                    await task
    finally:
        stop.set()
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await runtime.close()
        await operator_store.close()
        try:
            label = f"{LABEL_INSTALLATION}={configured.installation_id}"
            for service in await manager.services.list(filters={"label": [label]}):
                with contextlib.suppress(aiodocker.DockerError):
                    await manager.services.delete(service["ID"])
        finally:
            await manager.close()


@pytest.fixture
async def stack(
    swarm_cluster: SwarmCluster,
    database_url: str,
    store: Store,
    tokens: Any,
    port_range: PortRange,
    proxy_process: Any,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> AsyncIterator[SwarmStack]:
    """The stack for alice on the session's cluster (a test module takes it in with
    `stack = swarmstack.stack`); it records the nodes every 5 s."""
    async with swarm_stack(
        cluster=swarm_cluster,
        database_url=database_url,
        api_store=store,
        token=tokens.alice,
        ports=port_range,
        proxy_process=proxy_process,
        capsys=capsys,
        config_dir=tmp_path,
        resync_interval_s=5,
    ) as running:
        yield running
