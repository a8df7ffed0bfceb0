"""Nodes of the 3-node Swarm come and go under the swarm runtime: a node lost (its dockerd and
everything it ran killed) has its project running, Ready and routed on another node, the event
history saying what happened; a node drained has its project moved without a failed request
through the proxy (the same load as the zero-downtime scenarios)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from httpload import Load
from support import wait_for
from swarm import swarmstack
from swarm.swarmstack import SwarmStack

from tether.api.models import DesiredSnapshot, EventKind


@pytest.fixture
def proxy_hold_s() -> float:
    """The default hold time (TETHER_PROXY_HOLD_S): what the gap of a move has."""
    return 10.0


stack = swarmstack.stack  # the fixture


async def moved_off(stack: SwarmStack, node_id: str) -> DesiredSnapshot | None:
    snap = await stack.running_as_desired("shop")
    if snap is None:
        return None
    [task] = await stack.running_tasks("shop")
    return snap if task["NodeID"] != node_id else None


async def test_node_loss_the_project_runs_ready_and_routed_on_another_node(
    stack: SwarmStack, record_property: Any
) -> None:
    await stack.deploy("shop", env={"RELEASE": "1"})
    await stack.wait_running("shop", "shop running")
    [task] = await stack.running_tasks("shop")
    lost = stack.node_of(task)
    assert not lost.manager

    killed, killed_at = datetime.now(UTC), time.monotonic()
    await stack.cluster.kill(lost.name)
    try:
        await stack.cluster.wait_node_state(lost.name, "down", within_s=90)
        down_s = time.monotonic() - killed_at

        async def swarm_moved() -> bool:
            return any(t["NodeID"] != lost.id for t in await stack.running_tasks("shop"))

        await wait_for(swarm_moved, "Swarm to run shop elsewhere", within_s=120, every_s=0.1)
        swarm_s = time.monotonic() - killed_at
        snap = await wait_for(
            lambda: moved_off(stack, lost.id), "shop Ready elsewhere", within_s=60, every_s=0.1
        )
        ready_s = time.monotonic() - killed_at

        async def listed_down() -> bool:
            shown = (await stack.cli.ok("nodes", "-o", "json")).json()
            return any(n["hostname"] == lost.name and n["state"] == "down" for n in shown)

        # The operator records the nodes at each resync (every 5 s here).
        await wait_for(listed_down, f"`tether nodes` to show {lost.name} down", within_s=30)
    finally:
        await stack.cluster.revive(lost.name)
    print(
        f"node loss: {lost.name} Down after {down_s:.1f} s; Swarm ran the task elsewhere after "
        f"{swarm_s:.1f} s; tether had it Ready and routed after {ready_s:.1f} s"
    )
    record_property("node_loss_s", {"down": down_s, "swarm": swarm_s, "ready": ready_s})
    assert snap.status.running_version == 1
    events = [e for e in await stack.events("shop") if e.created_at >= killed]
    routed = [e for e in events if e.kind == EventKind.ROUTED]
    # The endpoint was held while no task answered, then routed to the new task's node.
    assert [e.reason for e in routed][-2:] == ["hold", "route v1"], routed
    assert lost.name in routed[-2].message, routed[-2].message
    [moved] = await stack.running_tasks("shop")
    assert stack.node_of(moved).name in routed[-1].message, routed[-1].message
    assert snap.status.node == stack.node_of(moved).name


async def test_a_drained_node_s_project_moves_without_a_failed_request(
    stack: SwarmStack, record_property: Any
) -> None:
    await stack.deploy("shop", env={"RELEASE": "1"})
    snap = await stack.wait_running("shop", "shop running")
    [task] = await stack.running_tasks("shop")
    drained = stack.node_of(task)
    load = Load("127.0.0.1", snap.project.host_port)
    load.start()
    try:
        await load.wait_for_answers(200)
        began = time.monotonic()
        await stack.cluster.set_availability(drained.name, "drain")
        try:
            await wait_for(
                lambda: moved_off(stack, drained.id),
                "shop Ready off the drained node",
                within_s=90,
                every_s=0.1,
            )
            moved_s = time.monotonic() - began
            await load.wait_for_answers(200)
        finally:
            await stack.cluster.set_availability(drained.name, "active")
    finally:
        tally = await load.stop()
    print(
        f"node drain: moved and Ready after {moved_s:.1f} s; {len(tally.answers)} answers, "
        f"{len(tally.failures)} failed"
    )
    record_property("drain", {"moved_s": moved_s, "failed": len(tally.failures)})
    assert not tally.failures, f"{len(tally.failures)} failed, e.g. {tally.failures[:3]}"
    assert len(tally.answers) > 400
