"""The Swarm the tests build (scripts/swarm-cluster) is what tether's swarm runtime needs: three
nodes Ready beside the main engine; a task publishing its port in host mode answers on its node's
address from the host, where tether's HAProxy runs; when its node is lost, Swarm runs it on
another node, where it answers, as it does when its node is drained; the node comes back; and
`down` leaves nothing behind."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiodocker
import httpx
import swarmcluster
from support import wait_for
from swarmcluster import SwarmCluster, SwarmNode

WORKLOAD = "tether-test/workload:latest"
WORKLOAD_PORT = 8080  # images/workload serves /healthz here


async def test_three_nodes_are_ready_and_the_main_engine_is_not_one(
    swarm_cluster: SwarmCluster,
) -> None:
    async with aiodocker.Docker(url=swarm_cluster.manager_url) as docker:
        nodes = {n["Description"]["Hostname"]: n for n in await docker.nodes.list()}
    assert sorted(nodes) == ["node1", "node2", "node3"]
    assert {name: n["Status"]["State"] for name, n in nodes.items()} == dict.fromkeys(
        nodes, "ready"
    )
    roles = {name: (n["Spec"]["Role"], n["Spec"]["Availability"]) for name, n in nodes.items()}
    # The manager runs no tasks, so that losing the node a project runs on never loses the
    # manager tether talks to.
    assert roles == {
        "node1": ("manager", "drain"),
        "node2": ("worker", "active"),
        "node3": ("worker", "active"),
    }
    for name, node in nodes.items():
        assert swarm_cluster.node(name).id == node["ID"]
        assert swarm_cluster.node(name).address == node["Status"]["Addr"]
    async with aiodocker.Docker() as main:
        info = await main.system.info()
    assert info["Swarm"]["NodeID"] not in {n["ID"] for n in nodes.values()}


async def test_a_host_mode_task_answers_on_its_node_and_moves_when_the_node_is_lost(
    swarm_cluster: SwarmCluster,
) -> None:
    async with (
        aiodocker.Docker(url=swarm_cluster.manager_url) as docker,
        _workload_service(docker, swarm_cluster) as (service_id, node, port),
    ):
        assert not node.manager

        killed_at = time.monotonic()
        await swarm_cluster.kill(node.name)
        try:
            assert not await _answers(node.address, port), "a killed node's task still answers"
            await swarm_cluster.wait_node_state(node.name, "down")
            down_s = time.monotonic() - killed_at
            moved, moved_port = await wait_for(
                lambda: _answering_task(docker, swarm_cluster, service_id, excluded=(node.id,)),
                f"Swarm to run the task on another node than {node.name}",
                within_s=60,
                every_s=0.2,
            )
            took = time.monotonic() - killed_at
            print(
                f"node loss: {node.name} down {down_s:.1f} s after the kill, "
                f"the task answering on {moved.name} after {took:.1f} s"
            )
        finally:
            await swarm_cluster.revive(node.name)
        assert await swarm_cluster.node_state(node.name) == "ready"
        # Swarm leaves a running task where it is when the lost node comes back.
        assert await _answers(moved.address, moved_port)


async def test_a_drained_node_s_task_moves_to_another_node(swarm_cluster: SwarmCluster) -> None:
    async with (
        aiodocker.Docker(url=swarm_cluster.manager_url) as docker,
        _workload_service(docker, swarm_cluster) as (service_id, node, port),
    ):
        await swarm_cluster.set_availability(node.name, "drain")
        try:
            await wait_for(
                lambda: _answering_task(docker, swarm_cluster, service_id, excluded=(node.id,)),
                f"Swarm to run the task on another node than the drained {node.name}",
                within_s=60,
            )

            async def stopped() -> bool:
                return not await _answers(node.address, port)

            await wait_for(stopped, f"the task on the drained {node.name} to stop", within_s=30)
        finally:
            await swarm_cluster.set_availability(node.name, "active")


@asynccontextmanager
async def _workload_service(
    docker: aiodocker.Docker, cluster: SwarmCluster
) -> AsyncIterator[tuple[str, SwarmNode, int]]:
    """A service of one workload task publishing its port in host mode, removed afterwards: its
    id, and the node and port its task answers on."""
    service = await docker.services.create(
        task_template={"ContainerSpec": {"Image": WORKLOAD}},
        name=f"cluster-test-{uuid.uuid4().hex[:8]}",
        mode={"Replicated": {"Replicas": 1}},
        # No PublishedPort: Docker picks one on the task's node (a fixed one would block a
        # start-first update on the same node).
        endpoint_spec={
            "Ports": [{"Protocol": "tcp", "TargetPort": WORKLOAD_PORT, "PublishMode": "host"}]
        },
    )
    try:
        node, port = await wait_for(
            lambda: _answering_task(docker, cluster, service["ID"], excluded=()),
            "the service's task answering on its node",
            within_s=30,
        )
        yield service["ID"], node, port
    finally:
        await docker.services.delete(service["ID"])


async def test_down_leaves_the_machine_as_it_was() -> None:
    async with aiodocker.Docker() as main:
        swarm_before = (await main.system.info())["Swarm"]["LocalNodeState"]
    forward_before = swarmcluster.forward_policy()
    cluster = swarmcluster.up(2)
    try:
        assert swarmcluster.traces(cluster.number)
    finally:
        swarmcluster.down(cluster.number)
    assert swarmcluster.traces(cluster.number) == []
    assert swarmcluster.forward_policy() == forward_before
    async with aiodocker.Docker() as main:
        assert (await main.system.info())["Swarm"]["LocalNodeState"] == swarm_before


async def _answering_task(
    docker: aiodocker.Docker, cluster: SwarmCluster, service_id: str, excluded: tuple[str, ...]
) -> tuple[SwarmNode, int] | None:
    """The node and host port of the service's running task whose endpoint answers, on a node
    not in `excluded`."""
    tasks = await docker.tasks.list(filters={"service": service_id, "desired-state": "running"})
    for task in tasks:
        port = _published_port(task)
        if task["Status"]["State"] != "running" or task["NodeID"] in excluded or port is None:
            continue
        node = cluster.node(task["NodeID"])
        if await _answers(node.address, port):
            return node, port
    return None


def _published_port(task: Mapping[str, Any]) -> int | None:
    ports = task["Status"].get("PortStatus", {}).get("Ports", [])
    return next((p["PublishedPort"] for p in ports if p["TargetPort"] == WORKLOAD_PORT), None)


async def _answers(address: str, port: int) -> bool:
    async with httpx.AsyncClient(timeout=2, trust_env=False) as http:
        try:
            response = await http.get(f"http://{address}:{port}/healthz")
        except httpx.TransportError:
            return False
    return response.status_code == 200
