"""The whole stack on the swarm runtime, for one test: the HTTP API (uvicorn) and an operator on a
real Postgres, the operator driving the Swarm cluster's manager (tests/swarmcluster.py) and
routing through the test's own HAProxy, the API reading output through the manager; people use
the `tether` CLI in-process and the HTTP API (the web console's), and an outside actor talks to
the manager directly."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import httpx
import pytest
import structlog
from cliuser import Cli
from scenarios.harness import (
    Projects,
    endpoint_answers,
    labelled_as_desired,
    operating,
    people,
    proxied,
    stack_settings,
)
from support import wait_for
from swarmcluster import SwarmCluster, SwarmNode

from tether.api.app import create_app
from tether.api.models import DesiredSnapshot
from tether.api.settings import Settings
from tether.api.store import PortRange, Store
from tether.operator.labels import LABEL_INSTALLATION, LABEL_PROJECT
from tether.operator.runtimes import log_source, open_runtime
from tether.operator.service import Operator


@dataclass
class SwarmStack(Projects):
    settings: Settings
    store: Store  # the operator's own pool
    cluster: SwarmCluster
    manager: aiodocker.Docker  # an outside actor on the Swarm manager
    cli: Cli
    console: httpx.AsyncClient
    logs: list[dict[str, Any]]
    operator: Operator

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

    async def running_as_desired(self, name: str) -> DesiredSnapshot | None:
        """Ready; one service of replicas 1 labelled with the target and the restart token; one
        task running, the one status names; the endpoint answering through the proxy."""
        snap = await self.ready(name)
        if snap is None:
            return None
        services = await self.services(name)
        if len(services) != 1:
            return None
        [service] = services
        replicas = service["Spec"]["Mode"]["Replicated"]["Replicas"]
        if replicas != 1 or not labelled_as_desired(service["Spec"]["Labels"], snap):
            return None
        tasks = await self.running_tasks(name)
        if len(tasks) != 1 or tasks[0]["ID"] != snap.status.container_id:
            return None
        return snap if await endpoint_answers(snap) else None

    async def stopped_as_desired(self, name: str) -> DesiredSnapshot | None:
        snap = await self.converged_stopped(name)
        if snap is None:
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
    configured = stack_settings(
        database_url,
        ports,
        cluster.manager_url,
        runtime="swarm",
        **{"workers": 4, "lease_ttl_s": 3, **proxied(proxy_process), **settings},
    )
    operator_store = await Store.connect(database_url, ports)
    manager = aiodocker.Docker(url=cluster.manager_url)
    runtime = open_runtime(configured)
    output = log_source(configured)  # `tether logs`, as `tether api` reads it
    try:
        with structlog.testing.capture_logs() as logs:
            app = create_app(api_store, log_source=output)
            async with people(app, token, capsys, config_dir) as using:
                operator = Operator(configured, operator_store, runtime)
                async with operating(operator):
                    yield SwarmStack(
                        configured,
                        operator_store,
                        cluster,
                        manager,
                        using.cli,
                        using.console,
                        logs,
                        operator,
                    )
    finally:
        await output.close()
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
