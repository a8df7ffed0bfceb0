"""A project's named volume under the swarm runtime, on the 3-node Swarm: Swarm creates it
(labelled as tether's) on the node the first task runs on, tether pins the service to that node,
and every later task mounts the same data there. Losing that node leaves the project Stalled,
naming the node, with no task anywhere else (an empty volume elsewhere would lose the data);
once the node is back the project is Ready on it again, with the data it had.

Each deployment's command appends its RELEASE to /data/log at every start and serves a copy of
it, so the endpoint tells which starts the volume has seen."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import httpx
import pytest
from support import wait_for
from swarm import swarmstack
from swarm.swarmstack import SwarmStack

from tether.api.models import ConditionType, DesiredSnapshot
from tether.operator.labels import LABEL_INSTALLATION, LABEL_OWNER, LABEL_PROJECT, LABEL_VOLUME

APPEND = "echo $RELEASE >> /data/log && cp /data/log /www/log && exec serve"
VOLUME_NODE = "dev.tether.volume-node"

stack = swarmstack.stack  # the fixture


def release(n: str) -> dict[str, Any]:
    return {
        "command": ["sh", "-c", APPEND],
        "env": {"RELEASE": n},
        "volumes": [{"name": "data", "path": "/data"}],
    }


async def log_of(snap: DesiredSnapshot) -> list[str]:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"http://127.0.0.1:{snap.project.host_port}/log", timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.text.split()


@pytest.fixture
async def volumes_cleaned(stack: SwarmStack) -> AsyncIterator[None]:
    """Afterwards the project is destroyed (which keeps its volumes: that is the point), then the
    test's volumes on every node go too."""
    yield
    await stack.cli.ok("destroy", "shop", "--wait", "--timeout", "60")
    label = f"{LABEL_INSTALLATION}={stack.settings.installation_id}"
    for label_node in stack.cluster.nodes:
        async with aiodocker.Docker(url=label_node.docker_url) as node:
            await wait_for(
                lambda node=node: _no_container_of(node, label), "the tasks gone", within_s=60
            )
            listed = await node.volumes.list(filters={"label": [label]})
            for volume in listed.get("Volumes") or []:
                await node._query_json(f"volumes/{volume['Name']}", method="DELETE")


async def _no_container_of(node: aiodocker.Docker, label: str) -> bool:
    return not await node.containers.list(all=True, filters={"label": [label]})


async def volumes_on(stack: SwarmStack, url: str) -> list[dict[str, Any]]:
    label = f"{LABEL_INSTALLATION}={stack.settings.installation_id}"
    async with aiodocker.Docker(url=url) as node:
        listed = await node.volumes.list(filters={"label": [label]})
    return list(listed.get("Volumes") or [])


async def pinned(stack: SwarmStack) -> dict[str, Any] | None:
    services = await stack.services("shop")
    if len(services) != 1:
        return None
    spec = services[0]["Spec"]
    if VOLUME_NODE not in spec["Labels"]:
        return None
    return spec


async def test_the_volume_stays_on_its_node_and_its_loss_stalls_the_project(
    stack: SwarmStack, volumes_cleaned: None
) -> None:
    await stack.deploy("shop", **release("1"))
    await wait_for(lambda: pinned(stack), "the service pinned to its volume's node", within_s=90)
    snap = await stack.wait_running("shop", "v1 running")
    [task] = await stack.running_tasks("shop")
    holder = stack.node_of(task)
    assert not holder.manager
    spec = await pinned(stack)
    assert spec is not None
    assert spec["Labels"][VOLUME_NODE] == holder.id
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == [f"node.id=={holder.id}"]
    [volume] = await volumes_on(stack, holder.docker_url)
    name = f"tether.{stack.settings.installation_id}.shop.data"
    assert volume["Name"] == name
    assert volume["Labels"][LABEL_PROJECT] == "shop"
    assert volume["Labels"][LABEL_VOLUME] == "data"
    assert volume["Labels"][LABEL_OWNER] == snap.project.owner
    for other in stack.cluster.nodes:
        if other != holder:
            assert not await volumes_on(stack, other.docker_url), other.name
    first = await log_of(snap)
    assert set(first) == {"1"}, first  # the pin may have restarted it once

    await stack.deploy("shop", **release("2"))
    snap = await wait_for(
        lambda: _running_version(stack, 2), "v2 running", within_s=90, every_s=0.2
    )
    [task] = await stack.running_tasks("shop")
    assert task["NodeID"] == holder.id
    after_deploy = await log_of(snap)
    assert after_deploy == [*first, "2"], after_deploy  # v1's data, read by v2

    await stack.cli.ok("restart", "shop")
    snap = await wait_for(
        lambda: _restarted(stack, snap.project.restart_token),
        "shop restarted",
        within_s=90,
        every_s=0.2,
    )
    after_restart = await log_of(snap)
    assert after_restart == [*after_deploy, "2"], after_restart
    [task] = await stack.running_tasks("shop")
    assert task["NodeID"] == holder.id

    await stack.cluster.kill(holder.name)
    try:
        stalled = await wait_for(
            lambda: _stalled(stack), "shop Stalled on the lost node", within_s=90, every_s=0.2
        )
        assert stalled.status is not None
        found = stalled.status.condition(ConditionType.STALLED)
        assert found is not None
        assert found.reason == "VolumeNodeLost"
        assert holder.name in found.message, found.message
        assert "data" in found.message, found.message
        names = [s["Spec"]["Name"] for s in await stack.services("shop")]
        tasks = await stack.manager.tasks.list(filters={"service": names})
        elsewhere = [
            t
            for t in tasks
            if t.get("NodeID") not in (None, "", holder.id)
            and t["Status"]["State"] not in ("shutdown", "complete", "failed", "rejected")
        ]
        assert not elsewhere, elsewhere
        for other in stack.cluster.nodes:
            if other != holder:  # never an empty copy elsewhere
                assert not await volumes_on(stack, other.docker_url), other.name
        spec = await pinned(stack)
        assert spec is not None
        assert spec["TaskTemplate"]["Placement"]["Constraints"] == [f"node.id=={holder.id}"]
    finally:
        await stack.cluster.revive(holder.name)
    snap = await stack.wait_running("shop", "shop Ready again on its node", within_s=120)
    [task] = await stack.running_tasks("shop")
    assert task["NodeID"] == holder.id
    after_revival = await log_of(snap)
    assert after_revival[: len(after_restart)] == after_restart, after_revival
    assert after_revival[-1] == "2", after_revival


async def _running_version(stack: SwarmStack, version: int) -> DesiredSnapshot | None:
    snap = await stack.running_as_desired("shop")
    return snap if snap is not None and snap.status.running_version == version else None


async def _restarted(stack: SwarmStack, before: int) -> DesiredSnapshot | None:
    snap = await stack.running_as_desired("shop")
    return snap if snap is not None and snap.project.restart_token != before else None


async def _stalled(stack: SwarmStack) -> DesiredSnapshot | None:
    snap = await stack.snapshot("shop")
    if snap.status is None:
        return None
    found = snap.status.condition(ConditionType.STALLED)
    return snap if found is not None and found.status == "True" else None
