"""`tether operator` as a process: SIGTERM drains and exits 0; SIGKILL mid-replace leaves nothing
a restarted operator cannot finish; a standby takes over when the active operator dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiodocker
import pytest
from faultproxy import START, Delay, FaultProxy
from support import remove_containers, wait_for

from tether.api.models import ConditionType, DeploymentSpec, HealthCheck, Principal
from tether.api.store import PortRange, Store
from tether.operator.labels import LABEL_INSTALLATION, LABEL_PROJECT, LABEL_VERSION

pytestmark = pytest.mark.docker

TETHER = str(Path(sys.executable).parent / "tether")
ALICE = Principal(owner="alice")
SPEC = DeploymentSpec(
    image="tether-test/workload:latest",
    port=8080,
    health=HealthCheck(type="http", path="/healthz"),
    stop_grace_s=2,
)


@pytest.fixture
def installation() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def docker_api(installation: str) -> AsyncIterator[aiodocker.Docker]:
    docker = aiodocker.Docker()
    yield docker
    await remove_containers(docker, installation)
    await docker.close()


Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def spawn(
    database_url: str,
    port_range: PortRange,
    installation: str,
    tmp_path: Path,
    docker_api: aiodocker.Docker,
    proxy_process: Any,
) -> AsyncIterator[Spawn]:
    """Operator processes (`spawn(TETHER_X=...)` to add settings) routing through the test's
    own HAProxy, killed before `docker_api` removes the test's containers."""
    processes: list[asyncio.subprocess.Process] = []
    env = {
        **os.environ,
        "TETHER_DATABASE_URL": database_url,
        "TETHER_INSTALLATION_ID": installation,
        "TETHER_PORT_RANGE": f"{port_range.first}-{port_range.last}",
        "TETHER_LEASE_TTL_S": "3",
        "TETHER_LOG_FORMAT": "json",
        "TETHER_OPERATOR_PORT": "0",  # several operators at once: each its own endpoint
        "TETHER_PROXY_DIR": str(proxy_process.config.directory),
        "TETHER_PROXY_SOCKET": str(proxy_process.config.socket),
    }

    async def start(**settings: str) -> asyncio.subprocess.Process:
        with (tmp_path / f"operator-{len(processes)}.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                TETHER, "operator", env={**env, **settings}, stdout=log, stderr=log
            )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def containers(docker: aiodocker.Docker, installation: str) -> list[dict[str, Any]]:
    listed = await docker.containers.list(
        all=True,
        filters={"label": [f"{LABEL_INSTALLATION}={installation}", f"{LABEL_PROJECT}=shop"]},
    )
    return [await c.show() for c in listed]


async def ready_at(store: Store, version: int) -> bool:
    snap = await store.desired("shop")
    if snap is None or snap.status is None:
        return False
    ready = snap.status.condition(ConditionType.READY)
    return (
        snap.status.observed_generation == snap.project.generation
        and ready is not None
        and ready.status == "True"
        and snap.status.running_version == version
    )


async def test_sigterm_drains_and_exits_zero(
    docker_proxy: FaultProxy,
    spawn: Spawn,
    store: Store,
    tmp_path: Path,
    docker_api: aiodocker.Docker,
    installation: str,
) -> None:
    """SIGTERM while a pass is in flight (the proxy holds its start): the pass is let finish, its
    outcome logged, and only then does the process exit 0."""
    held_s = 4.0
    hold = docker_proxy.inject(START, Delay(held_s), times=1, project="shop")
    process = await spawn(TETHER_DOCKER_URL=docker_proxy.url)
    await store.create_project("shop", ALICE)
    await store.deploy("shop", SPEC, ALICE)

    async def in_flight() -> bool:
        return hold.hits == 1

    await wait_for(in_flight, "the pass's start held by the proxy", within_s=30)
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await process.wait() == 0
    exited = time.monotonic()
    [start] = docker_proxy.calls_to(START, project="shop")
    assert exited - start.at >= held_s, "exited before the held start was answered"
    lines = [
        json.loads(line)
        for line in (tmp_path / "operator-0.log").read_text().splitlines()
        if line.startswith("{")
    ]
    said = [line["event"] for line in lines]
    draining = said.index("draining in-flight passes")
    assert lines[draining]["passes"] == 1
    [finished] = [n for n, line in enumerate(lines) if n > draining and line["event"] == "pass"]
    assert lines[finished]["project"] == "shop"
    assert lines[finished]["action"][:2] == ["create v1", "start v1"]
    assert lines[finished]["result"] != "crashed"
    assert said.index("operator stopped") > finished
    # Carried out, not cut short: the container the drained pass started runs.
    [container] = await containers(docker_api, installation)
    assert container["State"]["Running"]


@pytest.mark.parametrize(
    ("version", "action"),
    [("1", "stop"), ("2", "create"), ("2", "start")],
    ids=["after-stopping-v1", "after-creating-v2", "after-starting-v2"],
)
async def test_killed_mid_replace_a_restarted_operator_converges_without_duplicates(
    version: str,
    action: str,
    spawn: Spawn,
    store: Store,
    docker_api: aiodocker.Docker,
    installation: str,
) -> None:
    first = await spawn()
    await store.create_project("shop", ALICE)
    await store.deploy("shop", SPEC, ALICE)
    await wait_for(lambda: ready_at(store, 1), "v1 Ready")
    events = docker_api.events.subscribe(
        filters={"type": ["container"], "label": [f"{LABEL_INSTALLATION}={installation}"]}
    )
    try:
        await store.deploy("shop", SPEC.model_copy(update={"env": {"RELEASE": "2"}}), ALICE)
        async with asyncio.timeout(30):
            while True:
                event = await events.get()
                assert event is not None, "the Docker events stream ended"
                labels = event["Actor"]["Attributes"]
                if event["Action"] == action and labels.get(LABEL_VERSION) == version:
                    break
        first.kill()  # the moment Docker reports the step done
        await first.wait()
    finally:
        await docker_api.events.stop()

    await spawn()
    await wait_for(lambda: ready_at(store, 2), "v2 Ready after the restart", within_s=60)

    async def only_v2() -> list[dict[str, Any]] | None:
        found = await containers(docker_api, installation)
        return found if len(found) == 1 else None

    [survivor] = await wait_for(only_v2, "the v1 container removed")
    assert survivor["Config"]["Labels"][LABEL_VERSION] == "2"
    assert survivor["State"]["Running"]


async def test_a_standby_takes_over_when_the_active_operator_dies(
    spawn: Spawn, store: Store, docker_api: aiodocker.Docker, installation: str
) -> None:
    active = await spawn()
    await store.create_project("shop", ALICE)
    await store.deploy("shop", SPEC, ALICE)
    await wait_for(lambda: ready_at(store, 1), "shop Ready")
    await spawn()  # the standby
    active.kill()
    await active.wait()
    died = time.monotonic()

    [container] = await containers(docker_api, installation)
    await docker_api.containers.container(container["Id"]).kill()

    async def running_again() -> bool:
        found = await containers(docker_api, installation)
        return len(found) == 1 and found[0]["State"]["Running"]

    await wait_for(running_again, "the standby to repair the kill", within_s=30)
    # Lease TTL is 3 s here; renewal every TTL/3: the standby acts within about one TTL.
    assert time.monotonic() - died < 15
