"""What Swarm cannot do is said, with Swarm's own reason: a task that fails to start (an image no
node has) shows Swarm's error in the project's conditions while Swarm retries; a task no node
can take (every worker drained) is reported pending with Swarm's reason, then Stalled, and runs
once a node can take it."""

from __future__ import annotations

from scenarios.harness import condition
from support import wait_for
from swarm import swarmstack
from swarm.swarmstack import SwarmStack

from tether.api.models import ConditionType, DesiredSnapshot
from tether.operator.swarm.planner import PENDING_TOO_LONG_S

stack = swarmstack.stack  # the fixture


def reconciling(snap: DesiredSnapshot) -> tuple[str, str]:
    found = snap.status.condition(ConditionType.RECONCILING) if snap.status else None
    return (found.reason, found.message) if found else ("", "")


async def test_a_task_that_cannot_start_shows_swarms_error(stack: SwarmStack) -> None:
    await stack.deploy("shop", image="tether-test/absent:1")

    async def failing() -> DesiredSnapshot | None:
        snap = await stack.snapshot("shop")
        return snap if reconciling(snap)[0] == "TaskFailed" else None

    snap = await wait_for(failing, "Swarm's task error in status", within_s=60, every_s=0.2)
    _, message = reconciling(snap)
    assert "tether-test/absent:1" in message or "No such image" in message, message
    assert condition(snap, ConditionType.READY) == "False"
    assert snap.status.phase == "CrashLoop"


async def test_a_task_no_node_can_take_is_reported_pending_then_runs(stack: SwarmStack) -> None:
    workers = [n.name for n in stack.cluster.workers]
    for name in workers:
        await stack.cluster.set_availability(name, "drain")
    try:
        # A deadline past the planner's own: Stalled for Swarm's reason, not the deadline's.
        await stack.deploy("shop", ready_deadline_s=int(PENDING_TOO_LONG_S) + 30)

        async def pending() -> DesiredSnapshot | None:
            snap = await stack.snapshot("shop")
            reason, message = reconciling(snap)
            return snap if reason == "TaskPending" and "no suitable node" in message else None

        # Said before it is given up on, with Swarm's reason.
        await wait_for(pending, "shop's task pending, and why", within_s=30, every_s=0.2)

        async def stalled() -> DesiredSnapshot | None:
            snap = await stack.snapshot("shop")
            return snap if condition(snap, ConditionType.STALLED) == "True" else None

        snap = await wait_for(
            stalled, "shop Stalled: no node", within_s=PENDING_TOO_LONG_S + 20, every_s=0.5
        )
        stalled_condition = snap.status.condition(ConditionType.STALLED)
        assert stalled_condition is not None
        assert stalled_condition.reason == "Unschedulable", stalled_condition
        assert "pending" in stalled_condition.message
        assert "no suitable node" in stalled_condition.message, stalled_condition.message
        watched = await stack.cli("watch", "shop", "--timeout", "10")
        assert watched.code == 1, watched
    finally:
        for name in workers:
            await stack.cluster.set_availability(name, "active")
    await stack.wait_running("shop", "shop running once a node can take it", within_s=120)
