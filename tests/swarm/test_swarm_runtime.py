"""The swarm runtime keeps tether's promises on a 3-node Swarm (tests/swarmcluster.py): the seed's
story (deploy, stop from the console, start from the CLI, restart, an idempotent start), drift
repaired (a service scaled, edited or removed outside tether), and a rollout whose health never
passes rolled back by Swarm with the old deployment serving throughout, `tether watch` telling
each outcome by its exit code."""

from __future__ import annotations

import re
from typing import Any

from httpload import Load
from scenarios.harness import HEALTHY_ARGS, condition, endpoint_answers
from support import wait_for
from swarm import swarmstack
from swarm.swarmstack import SwarmStack

from tether.api.models import ConditionType, DesiredSnapshot, EventKind

stack = swarmstack.stack  # the fixture


def no_conflicts(stack: SwarmStack) -> None:
    for argv, result in stack.cli.runs:
        assert not re.search(r"\b409\b", result.out + result.err), (argv, result)
        assert "onflict" not in result.out + result.err, (argv, result)


async def test_the_seed_story_on_swarm(stack: SwarmStack) -> None:
    cli = stack.cli
    deployed = await cli.ok("deploy", "shop", *HEALTHY_ARGS, "--wait", "--timeout", "90")
    assert "v1 created" in deployed.out
    first = await stack.wait_running("shop", "shop running on a worker")
    [task] = await stack.running_tasks("shop")
    node = stack.node_of(task)
    assert not node.manager  # the manager is drained: Swarm placed it on a worker
    assert first.status.node == node.name
    table = (await cli.ok("status")).out
    header, row = table.splitlines()[0], next(r for r in table.splitlines() if "shop" in r)
    assert "NODE" in header.upper(), table
    assert node.name in row.split(), table
    shown = {n["hostname"]: n for n in (await cli.ok("nodes", "-o", "json")).json()}
    assert sorted(shown) == ["node1", "node2", "node3"]
    assert {n["state"] for n in shown.values()} == {"ready"}
    assert shown["node1"]["role"] == "manager"
    assert shown["node1"]["availability"] == "drain"
    listed = (await cli.ok("nodes")).out
    assert all(name in listed for name in shown), listed
    detail = (await cli.ok("status", "shop")).out
    assert re.search(rf"^node\s+{node.name}\s*$", detail, flags=re.MULTILINE), detail

    stopped = await stack.console.post("/v1/projects/shop/stop")
    assert stopped.status_code == 200, stopped.text
    await wait_for(
        lambda: stack.stopped_as_desired("shop"), "shop stopped by the console", within_s=60
    )
    [service] = await stack.services("shop")  # kept, at 0 replicas
    assert service["Spec"]["Mode"]["Replicated"]["Replicas"] == 0

    started = await cli.ok("start", "shop", "--wait", "--timeout", "90")
    assert "desired running" in started.out
    again = await stack.wait_running("shop", "shop running again")
    assert again.project.host_port == first.project.host_port
    repeated = await cli.ok("start", "shop")  # a desire already met: still exit 0
    assert "already desired running" in repeated.out
    watched = await cli("watch", "shop", "--timeout", "30")
    assert watched.code == 0, watched

    restarted = await cli.ok("restart", "shop", "--wait", "--timeout", "90")
    assert "replaced" in restarted.out
    replaced = await stack.wait_running("shop", "shop restarted")
    assert replaced.project.restart_token == first.project.restart_token + 1
    assert replaced.status.container_id not in (
        first.status.container_id,
        again.status.container_id,
    )
    [service] = await stack.services("shop")  # still the one service, updated in place
    assert service["ID"] == (await stack.services("shop"))[0]["ID"]
    assert service["Spec"]["TaskTemplate"]["ForceUpdate"] == replaced.project.restart_token

    await cli.ok("destroy", "shop", "--wait", "--timeout", "60")

    async def gone() -> bool:
        return await stack.store.desired("shop") is None and not await stack.services("shop")

    await wait_for(gone, "shop and its service gone", within_s=60, every_s=0.2)
    assert not await endpoint_answers(replaced)  # the route went with it
    no_conflicts(stack)


async def outside_update(stack: SwarmStack, change: Any) -> None:
    """An outside actor changes the project's service (as `docker service update` would)."""
    [service] = await stack.services("shop")
    spec = service["Spec"]
    change(spec)
    await stack.manager._query_json(
        f"services/{service['ID']}/update",
        method="POST",
        params={"version": service["Version"]["Index"]},
        data=spec,
    )


async def test_drift_is_put_back(stack: SwarmStack) -> None:
    await stack.deploy("shop")
    first = await stack.wait_running("shop", "shop running")

    def scale(spec: dict[str, Any]) -> None:
        spec["Mode"]["Replicated"]["Replicas"] = 3

    await outside_update(stack, scale)
    await wait_for(
        lambda: _replicas_back(stack), "the service scaled back to 1", within_s=60, every_s=0.2
    )
    await stack.wait_running("shop", "shop running after the scale")

    def edit(spec: dict[str, Any]) -> None:
        spec["TaskTemplate"]["ContainerSpec"].setdefault("Env", []).append("INJECTED=1")

    await outside_update(stack, edit)

    async def env_back() -> bool:
        [service] = await stack.services("shop")
        env = service["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env") or []
        return "INJECTED=1" not in env

    await wait_for(env_back, "the outside edit undone", within_s=60, every_s=0.2)
    await stack.wait_running("shop", "shop running after the edit")

    [service] = await stack.services("shop")
    await stack.manager.services.delete(service["ID"])
    recreated = await stack.wait_running("shop", "shop running after its service was removed")
    [again] = await stack.services("shop")
    assert again["ID"] != service["ID"]
    assert recreated.project.host_port == first.project.host_port
    reasons = [e.message for e in await stack.events("shop") if e.kind == EventKind.ACTION]
    assert any("edited outside tether" in m for m in reasons), reasons
    assert any("it asked for 3" in m for m in reasons), reasons


async def _replicas_back(stack: SwarmStack) -> bool:
    [service] = await stack.services("shop")
    return bool(service["Spec"]["Mode"]["Replicated"]["Replicas"] == 1)


async def test_a_rollout_whose_health_never_passes_is_rolled_back_while_the_old_one_serves(
    stack: SwarmStack,
) -> None:
    await stack.deploy("shop", env={"RELEASE": "1"})
    before = await stack.wait_running("shop", "v1 running")
    [old_task] = await stack.running_tasks("shop")
    load = Load("127.0.0.1", before.project.host_port, clients=4)
    load.start()
    try:
        await load.wait_for_answers(100)
        # v2 answers 404 on its health path: neither Swarm's check nor tether's passes.
        await stack.deploy(
            "shop",
            env={"RELEASE": "2"},
            health={"type": "http", "path": "/nope", "interval_s": 0.5, "timeout_s": 1},
            ready_deadline_s=10,
        )
        watched = await stack.cli("watch", "shop", "--timeout", "120")
        await load.wait_for_answers(100)
    finally:
        tally = await load.stop()
    assert watched.code == 1, watched
    assert "rollout of v2 failed" in watched.out + watched.err, watched

    async def back_on_v1() -> DesiredSnapshot | None:
        snap = await stack.converged("shop")
        ready = snap is not None and condition(snap, ConditionType.READY) == "True"
        return snap if ready and snap.status.running_version == 1 else None

    snap = await wait_for(back_on_v1, "shop Ready on v1 again", within_s=90, every_s=0.2)
    assert snap.status.failed_version == 2
    assert not tally.failures, tally.failures[:5]
    assert set(tally.versions()) == {"1"}  # v2 never served a request
    [task] = await stack.running_tasks("shop")
    assert task["ID"] == old_task["ID"]  # the old task served on, never stopped
    health = [e for e in await stack.events("shop") if e.reason == "RolloutFailed"]
    assert health, "no RolloutFailed event"
