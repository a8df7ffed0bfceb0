"""Zero downtime through the proxy: 16 keep-alive clients that never retry, on one project's
endpoint, while it is deployed, restarted, rolled back, deployed with a version that never gets
healthy, replaced stop-first, and while the proxy itself is reloaded. No request may fail, and
every answer comes from a version that was allowed to serve at that moment."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from httpload import Load, Tally
from scenarios.harness import Stack, StackFactory, endpoint_answers
from support import wait_for

from tether.api.models import DesiredSnapshot, EventKind

pytestmark = pytest.mark.docker

HEALTH = {"type": "http", "path": "/healthz", "interval_s": 0.2, "timeout_s": 1}


def release(n: int, **update: Any) -> dict[str, Any]:
    return {"env": {"RELEASE": str(n)}, "health": HEALTH, "drain_timeout_s": 5, **update}


async def rolled_out(stack: Stack, version: int) -> None:
    async def done() -> bool:
        snap = await stack.running_as_desired("shop")
        return (
            snap is not None
            and snap.status is not None
            and (snap.status.serving_version == version)
        )

    await wait_for(done, f"shop serving v{version} alone")


async def under_load(stack: Stack) -> Load:
    snap = await stack.snapshot("shop")
    load = Load("127.0.0.1", snap.project.host_port)
    load.start()
    await load.wait_for_answers(200)
    return load


def no_failures(tally: Tally, what: str) -> None:
    assert not tally.failures, f"{what}: {len(tally.failures)} failed, e.g. {tally.failures[:3]}"
    assert len(tally.answers) > 200, f"{what}: the load did not run"


async def test_no_request_fails_across_rollouts_rollbacks_and_a_proxy_reload(
    make_stack: StackFactory, proxy_process: Any
) -> None:
    async with make_stack() as stack:
        await stack.deploy("shop", **release(1))
        await rolled_out(stack, 1)

        # A healthy v2: v1 serves until v2 answers, then only v2.
        load = await under_load(stack)
        began = time.monotonic()
        await stack.deploy("shop", **release(2))
        await rolled_out(stack, 2)
        switched = time.monotonic()
        await load.wait_for_answers(200)
        tally = await load.stop()
        no_failures(tally, "deploy v2")
        assert set(tally.versions(until=began)) == {"1"}
        assert set(tally.versions()) == {"1", "2"}
        assert set(tally.versions(since=switched)) == {"2"}

        # A restart: a fresh container of v2 beside the old one.
        load = await under_load(stack)
        before = (await stack.snapshot("shop")).status
        assert before is not None
        answer = await stack.console.post("/v1/projects/shop/restart")
        assert answer.status_code == 200, answer.text

        async def replaced() -> bool:
            snap = await stack.running_as_desired("shop")
            return (
                snap is not None
                and snap.status is not None
                and (snap.status.container_id != before.container_id)
            )

        await wait_for(replaced, "a fresh container of v2")
        tally = await load.stop()
        no_failures(tally, "restart")
        assert set(tally.versions()) == {"2"}

        # A rollback to v1.
        load = await under_load(stack)
        answer = await stack.console.post("/v1/projects/shop/rollback", json={"to_version": 1})
        assert answer.status_code == 200, answer.text
        await rolled_out(stack, 1)
        switched = time.monotonic()
        await load.wait_for_answers(200)
        tally = await load.stop()
        no_failures(tally, "rollback")
        assert set(tally.versions(since=switched)) == {"1"}

        # A v3 whose health check never passes: it never serves, v1 is never touched.
        serving = (await stack.snapshot("shop")).status
        assert serving is not None
        load = await under_load(stack)
        bad = release(3, health={**HEALTH, "path": "/never"}, ready_deadline_s=6)
        answer = await stack.console.post(
            "/v1/projects/shop/deployments",
            json={
                "image": "tether-test/workload:latest",
                "port": 8080,
                "stop_grace_s": 2,
                **bad,
            },
        )
        assert answer.status_code == 201, answer.text

        async def gave_up() -> bool:
            events = await stack.events("shop")
            snap = await stack.converged("shop")
            return (
                any(e.reason == "RolloutFailed" for e in events)
                and snap is not None
                and snap.status is not None
                and snap.status.serving_version == 1
                and len(await stack.containers("shop")) == 1
            )

        await wait_for(gave_up, "the v3 rollout to fail", within_s=60)
        tally = await load.stop()
        no_failures(tally, "a deploy that never gets healthy")
        assert set(tally.versions()) == {"1"}
        after = (await stack.snapshot("shop")).status
        assert after is not None
        assert after.container_id == serving.container_id  # the same v1 container throughout

        # The proxy reloaded (its master starts a new worker, the old one finishes its work).
        load = await under_load(stack)
        await proxy_process.process.reload()
        await load.wait_for_answers(400)
        tally = await load.stop()
        no_failures(tally, "proxy reload")

        kinds = [e.kind for e in await stack.events("shop")]
        for kind in (EventKind.ROUTED, EventKind.DRAINED):
            assert kind in kinds, f"no {kind} event"


async def test_a_stop_first_deployment_holds_requests_through_its_gap(
    make_stack: StackFactory,
) -> None:
    """Stop-first runs one container at a time: requests that arrive in the gap wait (the
    proxy holds them) instead of being refused. The gap is measured and printed."""
    async with make_stack() as stack:
        await stack.deploy("shop", **release(1, strategy="stop-first"))
        await rolled_out(stack, 1)
        load = await under_load(stack)
        await stack.deploy("shop", **release(2, strategy="stop-first"))
        await rolled_out(stack, 2)
        await load.wait_for_answers(200)
        tally = await load.stop()
        no_failures(tally, "stop-first deploy")
        times = [t for t, _ in tally.answers]
        gap = max(b - a for a, b in itertools.pairwise(sorted(times)))
        print(f"stop-first gap: the longest time without an answer was {gap * 1000:.0f} ms")
        assert set(tally.versions()) == {"1", "2"}


async def test_a_route_changed_by_hand_is_corrected_within_one_resync(
    make_stack: StackFactory, proxy_process: Any
) -> None:
    async with make_stack(resync_interval_s=1.0) as stack:
        await stack.deploy("shop", **release(1))
        await rolled_out(stack, 1)
        snap = await stack.snapshot("shop")
        port = snap.project.host_port
        haproxy = proxy_process.client
        await haproxy.command(
            "edit", f"set map {haproxy.config.map_file} {port} tcp:127.0.0.1:9:0:x"
        )

        async def corrected() -> bool:
            route = await haproxy.route(port)
            return (
                route is not None and route.upstream == (await stack.snapshot("shop")).status.route
            )

        await wait_for(corrected, "the hand-made route put back", within_s=15)
        assert await endpoint_answers(await stack.snapshot("shop"))


async def test_a_killed_serving_container_is_replaced_and_the_route_follows(
    make_stack: StackFactory, proxy_process: Any
) -> None:
    async with make_stack() as stack:
        await stack.deploy("shop", **release(1))
        before = await wait_for(lambda: stack.running_as_desired("shop"), "shop Ready")
        assert before.status is not None
        dead = before.status.route
        await stack.docker.containers.container(before.status.container_id).kill()

        async def routed_again() -> DesiredSnapshot | None:
            snap = await stack.running_as_desired("shop")
            if snap is None or snap.status is None or snap.status.route in (None, "held", dead):
                return None
            return snap

        after = await wait_for(routed_again, "shop routed to its restarted container")
        assert after.status is not None
        route = await proxy_process.client.route(after.project.host_port)
        assert route is not None
        assert route.upstream == after.status.route != dead
        kinds = [(e.kind, e.reason) for e in await stack.events("shop")]
        assert (EventKind.ROUTED, "hold") in kinds  # nothing was sent to the dead port meanwhile
