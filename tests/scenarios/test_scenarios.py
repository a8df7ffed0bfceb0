"""Scenarios on the whole stack, under fire: the HTTP API (uvicorn) and the operator on a real
Postgres, the operator talking to the real Docker engine through the fault-injecting proxy
(tests/faultproxy.py), and people using the `tether` CLI in-process, as they would. The harness
that builds all this is tests/scenarios/harness.py; its fixtures are in conftest.py beside it.

Each scenario says what it proves; docs/faults.md is the matrix of faults and the tests here that
prove what tether does about each.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from faultproxy import (
    CALL_KINDS,
    EVENTS,
    INSPECT,
    LIST,
    NOT_MODIFIED,
    START,
    STOP,
    Delay,
    Drop,
    Fault,
    FaultProxy,
    Respond,
    Stale,
    already_running,
    server_error,
    summary,
)
from scenarios.harness import (
    HEALTHY_ARGS,
    PrivateEngine,
    Stack,
    StackFactory,
    condition,
    endpoint_answers,
    proxied,
    running_stack,
    spec,
)
from support import elapsed, wait_for

from tether.api.models import ConditionType, DesiredSnapshot, EventKind
from tether.api.store import PortRange, Store
from tether.operator.engine.runtime import FAILED_STARTS_BEFORE_REPLACING
from tether.operator.labels import LABEL_VERSION
from tether.operator.retry import RETRY_CAP_S, RETRY_FIRST_S, RETRY_JITTER

pytestmark = pytest.mark.docker


def no_conflicts(stack: Stack) -> None:
    """No answer anywhere was a 409: not from the API, not in anything the CLI printed."""
    assert [a for a in stack.api.answers if a[2] == 409] == []
    for argv, result in stack.cli.runs:
        # As a word: container ids are hex, and may well contain the digits 409.
        assert not re.search(r"\b409\b", result.out + result.err), (argv, result)
        assert "onflict" not in result.out + result.err, (argv, result)


# The seed's story


async def test_seed_story_start_after_a_console_stop_restart_and_restart_without_deployment(
    stack: Stack,
) -> None:
    """The platform's failure, replayed: stopped from the web console, `start` from the CLI
    answered 409; `restart` claimed success with nothing to start; "ready" while the endpoint
    failed. Here: exit 0, no 409 anywhere, Ready (endpoint answering) within the deadline;
    restart replaces the container; restart without deployment fails loudly and changes
    nothing."""
    cli = stack.cli
    deployed = await cli.ok("deploy", "shop", *HEALTHY_ARGS, "--wait", "--timeout", "60")
    assert "v1 created" in deployed.out
    first = await wait_for(lambda: stack.running_as_desired("shop"), "shop running")

    stopped = await stack.console.post("/v1/projects/shop/stop")
    assert stopped.status_code == 200, stopped.text
    await wait_for(lambda: stack.stopped_as_desired("shop"), "shop stopped by the console")

    # Ready within its deadline: `--wait` gives up (exit 2, and `ok` fails) once it has passed.
    assert first.target is not None
    deadline_s = first.target.ready_deadline_s
    began = time.monotonic()
    started = await cli.ok("start", "shop", "--wait", "--timeout", str(deadline_s))
    assert time.monotonic() - began < deadline_s
    assert "desired running" in started.out
    again = await wait_for(lambda: stack.running_as_desired("shop"), "shop running again")
    # ... and it is this start that made it Ready, as the operator recorded it.
    asked = [e for e in await stack.events("shop") if e.kind == EventKind.DESIRED][-1]
    assert asked.generation == again.project.generation
    ready_condition = again.status.condition(ConditionType.READY)
    assert ready_condition is not None
    took = ready_condition.last_transition_time - asked.created_at
    assert timedelta(0) < took < timedelta(seconds=deadline_s), took
    assert again.status.container_id == first.status.container_id  # the same one, started
    assert again.project.host_port == first.project.host_port
    shown = (await cli.ok("status", "shop", "-o", "json")).json()
    ready = next(c for c in shown["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    # A second start meets a project already running: a desire already met, still exit 0.
    repeated = await cli.ok("start", "shop")
    assert "already desired running" in repeated.out

    restarted = await cli.ok("restart", "shop", "--wait", "--timeout", "60")
    assert "replaced" in restarted.out
    replaced = await wait_for(lambda: stack.running_as_desired("shop"), "shop restarted")
    assert replaced.status.container_id != first.status.container_id
    assert replaced.project.restart_token == first.project.restart_token + 1
    assert replaced.project.host_port == first.project.host_port

    await cli.ok("projects", "create", "empty")
    before = await stack.snapshot("empty")
    refused = await cli("restart", "empty")
    assert refused.code == 1, refused
    assert refused.out == ""  # nothing claims success
    assert "no deployment" in refused.err
    assert "tether deploy empty" in refused.err  # what to run first
    after = await stack.snapshot("empty")
    assert after.project.generation == before.project.generation
    assert after.project.desired_state == "stopped"
    desired = [e.reason for e in await stack.events("empty") if e.kind == EventKind.DESIRED]
    assert desired == ["Created"]
    assert await stack.containers("empty") == []
    no_conflicts(stack)


async def test_ready_tells_the_truth_a_running_container_whose_endpoint_fails(
    stack: Stack,
) -> None:
    """The container runs, but its health endpoint answers 404: never shown Ready, and waiting
    on it ends non-zero once its deadline has passed."""
    await stack.deploy(
        "shop",
        # httpd serving a directory without /healthz: the endpoint answers, with 404.
        command=["httpd", "-f", "-p", "8080", "-h", "/tmp"],
        ready_deadline_s=4,
        stop_grace_s=0,
    )
    began = time.monotonic()
    watched = asyncio.create_task(stack.cli("watch", "shop", "--timeout", "30"))
    seen: list[tuple[str, str | None]] = []

    async def stalled() -> DesiredSnapshot | None:
        snap = await stack.snapshot("shop")
        if snap.status is not None:
            seen.append((snap.status.phase, condition(snap, ConditionType.READY)))
        return snap if condition(snap, ConditionType.STALLED) == "True" else None

    snap = await wait_for(stalled, "shop Stalled", within_s=30)
    result = await watched
    assert result.code == 1, result
    assert time.monotonic() - began >= 4
    assert ("Starting", "False") in seen
    assert all(ready != "True" for _, ready in seen), seen
    assert snap.status.phase == "Unhealthy"
    assert "endpoint does not answer" in (snap.status.condition(ConditionType.READY).message)
    [container] = await stack.containers("shop")
    assert container["State"]["Running"]  # it runs; it is just not Ready
    shown = (await stack.cli.ok("status", "shop", "-o", "json")).json()
    assert {c["type"]: c["status"] for c in shown["status"]["conditions"]}["Ready"] == "False"


# A lying Docker


async def stop_from_the_console(stack: Stack, name: str) -> DesiredSnapshot:
    answer = await stack.console.post(f"/v1/projects/{name}/stop")
    assert answer.status_code == 200, answer.text
    snap: DesiredSnapshot = await wait_for(
        lambda: stack.stopped_as_desired(name), f"{name} stopped"
    )
    return snap


async def test_start_refused_as_already_running_k_times_converges_with_the_attempts_shown(
    stack: Stack,
) -> None:
    """The lie of the seed's story: Docker answers 409 'already running' to the first K starts
    while the container is stopped. tether does not believe it: it looks again, retries with
    backoff, shows each attempt in status, events and logs, and converges once the lie stops."""
    k = 3
    await stack.cli.ok("deploy", "shop", *HEALTHY_ARGS)
    await wait_for(lambda: stack.running_as_desired("shop"), "shop running")
    await stop_from_the_console(stack, "shop")
    lie = stack.proxy.inject(START, already_running(), times=k, project="shop")
    attempts_seen: set[int] = set()
    errors_seen: set[str] = set()

    async def running() -> DesiredSnapshot | None:
        snap = await stack.snapshot("shop")
        if snap.status is not None and snap.status.attempts:
            attempts_seen.add(snap.status.attempts)
            errors_seen.add(snap.status.last_error or "")
        return await stack.running_as_desired("shop")

    await stack.cli.ok("start", "shop")
    done = await wait_for(running, "shop running after the lies", within_s=30)
    assert lie.hits == k

    assert attempts_seen == set(range(1, k + 1)), attempts_seen
    assert all("start v1 had no effect" in e for e in errors_seen), errors_seen
    assert done.status.attempts == 0
    assert done.status.last_error is None

    starts = stack.proxy.calls_to(START, project="shop")
    assert summary(starts[-k - 1 :]) == [(START, "respond 409", 409)] * k + [(START, None, 204)]
    events = await stack.events("shop")
    refused = [e for e in events if e.kind == EventKind.REFUSED]
    assert len(refused) == k
    assert all("container already running" in e.message for e in refused)
    assert all(e.generation == done.project.generation for e in refused)
    passes = stack.passes("shop")
    failed = [p for p in passes if p["result"] == "retrying"]
    assert [p["attempt"] for p in failed] == list(range(1, k + 1))
    assert all(p["docker_status"] == 409 for p in failed)
    assert passes[-1]["result"] == "converged"
    shown = (await stack.cli.ok("events", "shop")).out
    assert shown.count("container already running") == k
    no_conflicts_from_the_api(stack)


def no_conflicts_from_the_api(stack: Stack) -> None:
    assert [a for a in stack.api.answers if a[2] == 409] == []
    for argv, result in stack.cli.runs:
        if argv[0] != "events":  # the history shows Docker's refusals, word for word
            assert not re.search(r"\b409\b", result.out + result.err), (argv, result)


def backoff_bounds(attempts: int) -> tuple[float, float]:
    """The wait after `attempts` failed passes in a row, at the extremes of its jitter."""
    base = min(RETRY_FIRST_S * 2.0 ** (attempts - 1), RETRY_CAP_S)
    return base * (1 - RETRY_JITTER), base * (1 + RETRY_JITTER)


async def test_lies_that_never_stop_reconciling_then_stalled_on_the_backoff_schedule(
    stack: Stack,
) -> None:
    """Start refused as 'already running' forever: Reconciling (Retrying) first, Stalled with the
    reason once the progress deadline (the deployment's ready_deadline_s) has passed; every
    attempt on the backoff schedule (0.5 s doubling, ±20 %), never a tight loop; and converged
    without anyone's help once the lie stops."""
    deadline_s = 5
    await stack.deploy("shop", ready_deadline_s=deadline_s)
    await wait_for(lambda: stack.running_as_desired("shop"), "shop running")
    await stop_from_the_console(stack, "shop")
    lie = stack.proxy.inject(START, already_running(), project="shop")
    phases: list[str] = []

    async def stalled() -> DesiredSnapshot | None:
        snap = await stack.snapshot("shop")
        if snap.status is not None and (not phases or phases[-1] != snap.status.phase):
            phases.append(snap.status.phase)
        return snap if condition(snap, ConditionType.STALLED) == "True" else None

    asked = time.monotonic()
    await stack.cli.ok("start", "shop")
    snap = await wait_for(stalled, "shop Stalled", within_s=30)
    assert time.monotonic() - asked >= deadline_s
    assert phases[0] == "Stopped"
    assert "Retrying" in phases
    assert phases[-1] == "Stalled"
    stalled_condition = snap.status.condition(ConditionType.STALLED)
    assert stalled_condition is not None
    assert stalled_condition.reason == "ProgressDeadlineExceeded"
    assert "start v1 had no effect" in stalled_condition.message
    assert condition(snap, ConditionType.RECONCILING) == "True"  # still trying
    assert condition(snap, ConditionType.READY) == "False"
    watched = await stack.cli("watch", "shop", "--timeout", "10")
    assert watched.code == 1, watched

    # Each failed pass left one refusal: their times are the attempts' times.
    refused = [e for e in await stack.events("shop") if e.kind == EventKind.REFUSED]
    assert len(refused) == snap.status.attempts
    assert len(stack.proxy.calls_to(START, project="shop")) - 1 == len(refused)  # +1: deploy
    times = [e.created_at for e in refused]
    slack_s = 1.0  # one pass's own duration and the timer's lateness, on a loaded machine
    for attempt, (before, after) in enumerate(itertools.pairwise(times), start=1):
        low, high = backoff_bounds(attempt)
        gap = (after - before).total_seconds()
        assert low <= gap <= high + slack_s, (attempt, gap, [t.isoformat() for t in times])
    # Stalled at the first failed pass past the deadline, counted from the first attempt.
    first_over = next(
        n for n in range(1, 20) if sum(backoff_bounds(a)[0] for a in range(1, n)) > deadline_s
    )
    assert len(refused) <= first_over

    stack.proxy.clear(lie)
    healed = await wait_for(
        lambda: stack.running_as_desired("shop"),
        "shop running once the lie stops",
        within_s=backoff_bounds(len(refused))[1] + 15,
    )
    assert condition(healed, ConditionType.STALLED) == "False"
    assert any(e.kind == EventKind.GAVE_UP for e in await stack.events("shop"))


async def test_a_new_desire_after_a_stalled_one_gets_its_own_progress_deadline(
    stack: Stack,
) -> None:
    """Stalled by lies, then the lie stops and the user restarts: the restart is a new
    generation with its own deadline; it must not be reported Stalled while it progresses."""
    slow = ["sh", "-c", "sleep 1; exec /bin/serve"]  # ready about a second after each start
    await stack.deploy("shop", command=slow, ready_deadline_s=3)
    await wait_for(lambda: stack.running_as_desired("shop"), "shop running")
    await stack.console.post("/v1/projects/shop/stop")
    await wait_for(lambda: stack.stopped_as_desired("shop"), "shop stopped")
    lie = stack.proxy.inject(START, already_running(), project="shop")
    await stack.cli.ok("start", "shop")

    async def stalled() -> DesiredSnapshot | None:
        snap = await stack.snapshot("shop")
        return snap if condition(snap, ConditionType.STALLED) == "True" else None

    before = await wait_for(stalled, "shop Stalled by the lies", within_s=30)
    stack.proxy.clear(lie)
    stalled_statuses: list[tuple[int, str]] = []
    restarting = asyncio.create_task(stack.cli("restart", "shop", "--wait", "--timeout", "30"))

    async def restarted() -> DesiredSnapshot | None:
        snap = await stack.snapshot("shop")
        status = snap.status
        if (
            status is not None
            and status.observed_generation > before.project.generation
            and condition(snap, ConditionType.STALLED) == "True"
        ):
            stalled_statuses.append((status.observed_generation, status.phase))
        return await stack.running_as_desired("shop") if restarting.done() else None

    await wait_for(restarted, "shop restarted", within_s=40)
    result = restarting.result()
    assert stalled_statuses == []
    assert result.code == 0, result


async def test_stop_answered_not_modified_without_stopping_converges(stack: Stack) -> None:
    """Docker answers 304 'not modified' to a stop and does not stop the container (aiodocker
    takes a 304 for success): tether looks again, sees it still running, retries with backoff,
    and stops it once Docker really does."""
    await stack.deploy("shop")
    await wait_for(lambda: stack.running_as_desired("shop"), "shop running")
    lie = stack.proxy.inject(STOP, NOT_MODIFIED, times=2, project="shop")
    await stack.cli.ok("stop", "shop")
    done = await wait_for(lambda: stack.stopped_as_desired("shop"), "shop stopped", within_s=30)
    assert lie.hits == 2
    stops = stack.proxy.calls_to(STOP, project="shop")
    assert [c.status for c in stops] == [304, 304, 204]
    failed = [p for p in stack.passes("shop") if p["result"] == "retrying"]
    assert [p["attempt"] for p in failed] == [1, 2]
    assert all("stop v1 had no effect" in p["error"] for p in failed)
    assert done.status.attempts == 0


async def test_stale_inspect_after_a_kill_is_not_taken_for_ready(stack: Stack) -> None:
    """The container is killed from outside, and Docker's inspect keeps answering what it said
    while it ran: tether probes the endpoint itself, so it shows the project not Ready
    (Unhealthy) instead of believing it, and starts it once inspect tells the truth."""
    await stack.deploy("shop")
    first = await wait_for(lambda: stack.running_as_desired("shop"), "shop running")
    stale = stack.proxy.inject(INSPECT, Stale(), times=3, project="shop")
    seen: list[tuple[str, str | None]] = []

    async def back() -> DesiredSnapshot | None:
        snap = await stack.snapshot("shop")
        if snap.status is not None and snap.status.updated_at and snap.status.updated_at > killed:
            seen.append((snap.status.phase, condition(snap, ConditionType.READY)))
        return await stack.running_as_desired("shop") if stale.hits == 3 else None

    killed = (await stack.snapshot("shop")).status.updated_at
    await stack.docker.containers.container(first.status.container_id).kill()
    again = await wait_for(back, "shop running again", within_s=30)
    assert again.status.container_id == first.status.container_id
    assert ("Unhealthy", "False") in seen, seen


async def test_create_refused_for_a_name_still_held_after_removal_converges(
    stack: Stack,
) -> None:
    """Docker answers a create with 409 'name already in use' although nothing holds the name
    (it lingers after a removal): tether checks who holds it, finds nobody, and creates it on
    a later attempt instead of giving up or touching anything else."""
    await stack.deploy("shop")
    first = await wait_for(lambda: stack.running_as_desired("shop"), "shop running")
    held = stack.proxy.inject(
        CALL_KINDS["create"],
        Respond(
            409,
            {"message": 'Conflict. The container name "/x" is already in use by container "0f"'},
        ),
        times=2,
        project="shop",
    )
    await stack.cli.ok("restart", "shop")

    async def replaced() -> DesiredSnapshot | None:
        snap = await stack.running_as_desired("shop")
        return snap if snap and snap.status.container_id != first.status.container_id else None

    await wait_for(replaced, "shop replaced", within_s=30)
    assert held.hits == 2
    refused = [e for e in await stack.events("shop") if e.kind == EventKind.REFUSED]
    assert [e.reason for e in refused] == ["create", "create"]


# Docker failing each kind of call


# (fault, how many calls in a row): for errors, more failures in a row than the driver's own
# retries of one call (3), so that a whole pass fails too and the work queue's backoff is used.
CALL_FAULTS: dict[str, list[tuple[Fault, int]]] = {
    "5xx": [(server_error(500), 2), (server_error(503), 2)],
    "delay": [(Delay(1.5), 1)],
    # aiohttp itself resends an idempotent request (GET, DELETE) once on a dropped kept-alive
    # connection: 7 drops fail at least one whole pass whichever way they are counted.
    "drop": [(Drop(), 7)],
    # The engine carries the call out, the answer is lost: the retry meets the result (a 304
    # for a start or stop, a 409 for the create of a name now taken, a 404 for a removal).
    "drop-after-forward": [(Drop(after_forward=True), 1)],
}


async def deploy_and_restart_each(
    stack: Stack, names: Iterable[str], *, within_s: float = 45.0
) -> None:
    """Deploy each project, and restart each once it is running: every kind of call (list,
    inspect, create, start, stop, remove) is made for each of them."""

    async def one(name: str) -> None:
        await stack.deploy(name)
        first = await wait_for(
            lambda: stack.running_as_desired(name), f"{name} running", within_s=within_s
        )
        answer = await stack.console.post(f"/v1/projects/{name}/restart")
        assert answer.status_code == 200, answer.text

        async def replaced() -> DesiredSnapshot | None:
            snap = await stack.running_as_desired(name)
            return snap if snap and snap.status.container_id != first.status.container_id else None

        await wait_for(replaced, f"{name} replaced", within_s=within_s)

    await asyncio.gather(*(one(name) for name in names))


@pytest.mark.parametrize("fault", list(CALL_FAULTS))
async def test_failing_docker_calls_of_each_kind_converge(fault: str, stack: Stack) -> None:
    """One project per kind of Docker call, each with that kind failing for it: every project is
    deployed, then replaced, and ends with exactly one container of the right deployment and
    restart token, running and Ready."""
    names = {kind: f"p-{kind}" for kind in CALL_KINDS}
    rules = [
        stack.proxy.inject(CALL_KINDS[kind], injected, times=times, project=name)
        for kind, name in names.items()
        for injected, times in CALL_FAULTS[fault]
    ]
    await deploy_and_restart_each(stack, names.values())
    for rule in rules:
        assert rule.remaining == 0, (rule.endpoint.spec, rule.project, rule.fault, rule.hits)
    assert [a for a in stack.api.answers if a[2] >= 500] == []
    failed = {
        p["project"] for p in stack.logs if p["event"] == "pass" and p["result"] == "retrying"
    }
    if fault in ("5xx", "drop"):  # more failures than one call's retries: a pass failed too
        assert failed == set(names.values())


async def test_docker_calls_that_never_answer_time_out_and_converge(stack: Stack) -> None:
    """Each kind of call held past the driver's per-call timeout (30 s, 30 s + grace for a
    stop), then carried out late by the engine: the call times out, is retried, and every
    project converges, with exactly one container."""
    names = {kind: f"p-{kind}" for kind in CALL_KINDS}
    hold_s = 35.0  # past the longest deadline: a stop's 30 s + its 2 s grace
    rules = [
        stack.proxy.inject(CALL_KINDS[kind], Delay(hold_s), times=1, project=name)
        for kind, name in names.items()
    ]
    began = time.monotonic()
    await deploy_and_restart_each(stack, names.values(), within_s=75)
    assert time.monotonic() - began >= 30  # each waited for its timeout
    assert all(rule.remaining == 0 for rule in rules)
    timed_out = [
        p for p in stack.logs if p["event"] == "pass" and "no answer in" in str(p.get("error", ""))
    ]
    assert timed_out == [], "one call timing out is retried within the pass"
    for name in names.values():
        assert len(await stack.containers(name)) == 1


# The Docker events stream


async def open_streams(stack: Stack, count: int) -> bool:
    return stack.proxy.open_streams == count


async def test_events_stream_cut_while_containers_are_killed_the_resync_repairs(
    make_stack: StackFactory,
) -> None:
    """The events stream ends (as when dockerd restarts) and cannot be reopened, while
    containers are killed from outside: no event will ever say so, the periodic resync (one
    container list) finds them and they run again."""
    async with make_stack(resync_interval_s=1.0) as stack:
        names = ["a", "b", "c"]
        for name in names:
            await stack.deploy(name)
        ready = {
            name: await wait_for(lambda n=name: stack.running_as_desired(n), f"{name} running")
            for name in names
        }
        await wait_for(lambda: open_streams(stack, 1), "the operator following events")
        refusal = stack.proxy.inject(EVENTS, Drop())
        cut_at = time.monotonic()
        assert stack.proxy.cut_event_streams(clean=False) == 1  # the connection just drops
        for snap in ready.values():
            await stack.docker.containers.container(snap.status.container_id).kill()

        for name, snap in ready.items():
            again = await wait_for(
                lambda n=name: stack.running_as_desired(n), f"{name} running again", within_s=20
            )
            assert again.status.container_id == snap.status.container_id  # restarted in place
        assert stack.proxy.open_streams == 0
        reconnects = stack.proxy.calls_to(EVENTS, since=cut_at)
        assert all(c.fault == "drop" for c in reconnects), summary(reconnects)
        assert any(line["event"] == "docker events stream ended" for line in stack.logs)

        stack.proxy.clear(refusal)
        await wait_for(lambda: open_streams(stack, 1), "the events stream back", within_s=20)


async def test_a_kill_while_the_events_stream_reconnects_is_not_left_to_the_periodic_resync(
    make_stack: StackFactory,
) -> None:
    async with make_stack(resync_interval_s=3600) as stack:
        await stack.deploy("shop")
        snap = await wait_for(lambda: stack.running_as_desired("shop"), "shop running")
        await wait_for(lambda: open_streams(stack, 1), "the operator following events")
        asked = len(stack.proxy.calls_to(EVENTS))
        # dockerd is slow to take the new subscription (as while it starts up)
        stack.proxy.inject(EVENTS, Delay(3.0), times=1)
        stack.proxy.cut_event_streams()

        async def resubscribing() -> bool:
            return len(stack.proxy.calls_to(EVENTS)) > asked

        await wait_for(resubscribing, "the operator subscribing again", within_s=10)
        await stack.docker.containers.container(snap.status.container_id).kill()
        await wait_for(lambda: stack.running_as_desired("shop"), "shop running again", within_s=10)


# The storm


STORM_CLIENTS = 10
STORM_WRITES = 100  # per client
STORM_PROJECTS = 20


def random_fault(rng: random.Random) -> tuple[str, Fault]:
    """A fault on some kind of call, as a flaky engine would have them."""
    return rng.choice(
        [
            (LIST, server_error(500)),  # the resync's, and a pass's while the index is not trusted
            (CALL_KINDS["inspect"], server_error(503)),
            (CALL_KINDS["inspect"], Stale()),
            (CALL_KINDS["create"], Drop(after_forward=True)),
            (CALL_KINDS["create"], server_error(500)),
            (START, already_running()),
            (START, NOT_MODIFIED),
            (START, Drop(after_forward=True)),
            (STOP, NOT_MODIFIED),
            (STOP, server_error(503)),
            (CALL_KINDS["remove"], Drop()),
            (CALL_KINDS["remove"], server_error(500)),
            (rng.choice(list(CALL_KINDS.values())), Delay(rng.uniform(0.2, 1.0))),
        ]
    )


@dataclass(frozen=True)
class Write:
    project: str
    verb: str
    status: int
    changed: bool | None
    generation: int | None
    desired_state: str | None


async def storm_client(url: str, token: str, names: list[str], seed: int) -> list[Write]:
    rng = random.Random(seed)
    writes: list[Write] = []
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        for i in range(STORM_WRITES):
            name = rng.choice(names)
            verb = rng.choices(["start", "stop", "restart", "deploy"], [3, 3, 2, 2])[0]
            if verb == "deploy":
                answer = await http.post(
                    f"/v1/projects/{name}/deployments",
                    json=spec(env={"RELEASE": f"{seed}-{i}"}),
                )
            else:
                answer = await http.post(f"/v1/projects/{name}/{verb}")
            body = answer.json() if answer.headers.get("content-type") == "application/json" else {}
            project = body.get("project") or {}
            writes.append(
                Write(
                    name,
                    verb,
                    answer.status_code,
                    body.get("changed"),
                    project.get("generation"),
                    project.get("desired_state"),
                )
            )
            await asyncio.sleep(rng.uniform(0, 0.02))
    return writes


async def test_storm_of_writes_under_random_faults_ends_as_last_desired(
    make_stack: StackFactory, tokens: Any
) -> None:
    """10 clients x 100 random start/stop/deploy/restart writes over 20 projects, while Docker
    fails, lies and stalls at random: no write is answered 5xx, the history has exactly one
    `desired` row per acknowledged change, and in the end Docker shows every project exactly
    as last desired."""
    rng = random.Random(4)
    async with make_stack(resync_interval_s=5.0) as stack:
        names = [f"storm-{i:02d}" for i in range(STORM_PROJECTS)]
        for name in names:
            await stack.deploy(name)
        initial = {name: (await stack.snapshot(name)).project.generation for name in names}

        storming = True

        async def inject_faults() -> int:
            injected = 0
            while storming:
                endpoint, fault = random_fault(rng)
                stack.proxy.inject(endpoint, fault, times=rng.randint(1, 3))
                injected += 1
                await asyncio.sleep(rng.uniform(0.05, 0.3))
            return injected

        faults = asyncio.create_task(inject_faults())
        began = time.monotonic()
        try:
            results = await asyncio.gather(
                *(
                    storm_client(stack.url, tokens.alice, names, seed)
                    for seed in range(STORM_CLIENTS)
                )
            )
        finally:
            storming = False
            injected = await faults
        stormed_s = time.monotonic() - began
        stack.proxy.clear()
        writes = [w for client in results for w in client]
        assert len(writes) == STORM_CLIENTS * STORM_WRITES
        assert {w.status for w in writes} <= {200, 201}, sorted({w.status for w in writes})
        hit = [c for c in stack.proxy.calls if c.fault is not None]
        assert len(hit) >= 20, f"only {len(hit)} faulty answers in {stormed_s:.1f} s"

        behind: dict[str, str] = {}

        async def all_as_desired() -> list[str] | None:
            behind.clear()
            for name in names:
                snap = await stack.snapshot(name)
                if snap.project.desired_state == "running":
                    ok = await stack.running_as_desired(name)
                else:
                    ok = await stack.stopped_as_desired(name)
                if ok is None:
                    containers = [
                        (c["Config"]["Labels"].get(LABEL_VERSION), c["State"]["Status"])
                        for c in await stack.containers(name)
                    ]
                    behind[name] = f"{snap.project.desired_state}: {snap.status!r} {containers}"
            return None if behind else names

        try:
            await wait_for(all_as_desired, "every project as last desired", within_s=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; behind: {behind}") from None

        for name in names:
            mine = [w for w in writes if w.project == name]
            changes = [w for w in mine if w.changed]
            snap = await stack.snapshot(name)
            # Docker shows what the last acknowledged write asked for.
            last = max(mine, key=lambda w: w.generation or 0, default=None)
            if last is not None:
                assert (last.generation, last.desired_state) == (
                    snap.project.generation,
                    snap.project.desired_state,
                )
            assert snap.project.generation - initial[name] == len(changes)
            desired = [e for e in await stack.events(name) if e.kind == EventKind.DESIRED]
            assert len(desired) == 2 + len(changes)  # created, deployed v1, then the storm's
            assert [e.generation for e in desired[2:]] == sorted(
                w.generation for w in changes if w.generation is not None
            )
        print(
            f"storm: {len(writes)} writes in {stormed_s:.1f} s, {injected} fault rules, "
            f"{len(hit)} faulty answers, converged {time.monotonic() - began:.1f} s after start"
        )


async def test_postgres_stopped_for_20_s_api_and_operator_recover_without_restart(
    own_postgres: tuple[str, str],
    docker_proxy: FaultProxy,
    port_range: PortRange,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    proxy_process: Any,
) -> None:
    """Postgres stops for about 20 s and starts again. During the outage the API answers 503 with
    a clear message and changes nothing, and the operator leaves every container as it is; after
    it, both work again without being restarted, and the writes acknowledged before the outage
    (held back from Docker until then) are applied."""
    dsn, postgres_id = own_postgres
    api_store = await Store.connect(dsn, port_range)
    try:
        token = await api_store.create_token("alice")
        async with running_stack(
            database_url=dsn,
            api_store=api_store,
            token=token,
            ports=port_range,
            proxy=docker_proxy,
            capsys=capsys,
            config_dir=tmp_path,
            **proxied(proxy_process),
        ) as stack:
            await outage_scenario(stack, postgres_id)
    finally:
        await api_store.close()


async def outage_scenario(stack: Stack, postgres_id: str) -> None:
    cli = stack.cli
    for name in ("steady", "halt", "late"):
        await stack.deploy(name)
    steady = {
        name: await wait_for(lambda n=name: stack.running_as_desired(n), f"{name} running")
        for name in ("steady", "halt", "late")
    }
    # Acknowledged, but held back from Docker until Postgres is gone: applying them must wait
    # for the outage to end.
    held = [
        stack.proxy.inject(endpoint, server_error(503), project=name)
        for endpoint in (START, STOP, CALL_KINDS["create"])
        for name in ("halt", "late")
    ]
    await cli.ok("stop", "halt")
    await cli.ok("deploy", "late", *HEALTHY_ARGS, "--env", "RELEASE=2")

    async def retrying() -> bool:
        snaps = [await stack.snapshot(n) for n in ("halt", "late")]
        return all(s.status is not None and s.status.attempts > 0 for s in snaps)

    await wait_for(retrying, "both writes failing to apply")
    postgres = stack.docker.containers.container(postgres_id)
    await postgres.stop(t=5)
    down = time.monotonic()
    for rule in held:
        stack.proxy.clear(rule)  # Docker would now do it: only the outage holds it back

    refused = await cli("start", "halt")
    assert refused.code == 1, refused
    assert refused.out == ""
    assert "503" in refused.err
    assert "database is unreachable" in refused.err
    assert "nothing was changed" in refused.err
    listing = await stack.console.get("/v1/projects")
    assert listing.status_code == 503
    assert listing.json()["error"] == "database_unavailable"
    assert "Retry-After" in listing.headers
    write = await stack.console.post("/v1/projects/steady/stop")
    assert write.status_code == 503

    async def outage_over() -> bool:
        # Meanwhile: no Docker action at all, and the running projects keep running.
        acting = [
            c
            for endpoint in (START, STOP, CALL_KINDS["create"], CALL_KINDS["remove"])
            for c in stack.proxy.calls_to(endpoint, since=down)
        ]
        assert acting == [], summary(acting)
        for name in ("steady", "late", "halt"):
            [container] = await stack.containers(name)
            assert container["State"]["Running"], name
            assert container["Id"] == steady[name].status.container_id
        return await elapsed(down, 20.0)

    await wait_for(outage_over, "20 s of outage", within_s=40)
    assert not stack.operator.holds_lease()  # it could not renew: it acts no more
    await postgres.start()

    async def api_back() -> bool:
        return (await stack.console.get("/v1/projects")).status_code == 200

    await wait_for(api_back, "the API answering again", within_s=30)
    await wait_for(lambda: stack.stopped_as_desired("halt"), "halt stopped", within_s=45)
    late = await wait_for(lambda: stack.running_as_desired("late"), "late at v2", within_s=45)
    assert late.project.target_version == 2
    kept = await stack.snapshot("steady")
    assert kept.project.desired_state == "running"  # the refused write was not applied
    assert kept.status is not None
    assert kept.status.container_id == steady["steady"].status.container_id
    # Both recovered without a restart: a new write is acted on, and waited for, at once.
    began = time.monotonic()
    await cli.ok("restart", "steady", "--wait", "--timeout", "60")
    await wait_for(lambda: stack.running_as_desired("steady"), "steady restarted")
    assert time.monotonic() - began < 30
    assert stack.operator.holds_lease()


async def test_docker_engine_restarted_every_project_desired_running_runs_again(
    private_engine: PrivateEngine,
    database_url: str,
    store: Store,
    tokens: Any,
    port_range: PortRange,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    proxy_process: Any,
) -> None:
    """dockerd stops (taking every container down with it) and starts again: each project
    desired running runs again, Ready, in its same container; a stopped one stays stopped.

    While dockerd shuts down, the operator's actions are refused (503), as an engine that has
    stopped serving would: the real dockerd still accepts starts on open connections while it
    shuts down, and such a start can leave a container it can never start again (see
    test_a_container_the_engine_can_no_longer_start_is_replaced)."""
    proxy = FaultProxy(str(private_engine.directory / "proxy.sock"), str(private_engine.socket))
    await proxy.start()
    try:
        async with running_stack(
            database_url=database_url,
            api_store=store,
            token=tokens.alice,
            ports=port_range,
            proxy=proxy,
            capsys=capsys,
            config_dir=tmp_path,
            engine_url=private_engine.url,
            **proxied(proxy_process),
        ) as stack:
            await engine_restart_scenario(stack, private_engine)
    finally:
        await proxy.close()


async def engine_restart_scenario(stack: Stack, engine: PrivateEngine) -> None:
    running = ["one", "two", "three"]
    for name in [*running, "off"]:
        await stack.deploy(name)
    before = {
        name: await wait_for(lambda n=name: stack.running_as_desired(n), f"{name} running")
        for name in [*running, "off"]
    }
    await stop_from_the_console(stack, "off")
    await wait_for(lambda: open_streams(stack, 1), "the operator following events")

    shutting_down = [
        stack.proxy.inject(endpoint, server_error(503))
        for endpoint in (START, STOP, CALL_KINDS["create"], CALL_KINDS["remove"])
    ]
    await engine.stop()
    for name in running:
        assert not await endpoint_answers(before[name])
    await engine.start()
    for rule in shutting_down:
        stack.proxy.clear(rule)

    for name in running:
        again = await wait_for(
            lambda n=name: stack.running_as_desired(n), f"{name} running again", within_s=60
        )
        assert again.status.container_id == before[name].status.container_id
    assert await stack.stopped_as_desired("off")
    assert len(await stack.containers("off")) == 1
    assert any(line["event"] == "docker events stream ended" for line in stack.logs)


async def test_a_container_the_engine_can_no_longer_start_is_replaced(stack: Stack) -> None:
    """After a dockerd restart, a container that was being started while the engine shut down
    can be left so that every start fails ('task ... already exists' (500), 'endpoint with name
    ... already exists in network bridge' (403)); seen on this machine with a real dockerd. The
    container is disposable: a fresh one of the same deployment starts. Here the proxy gives
    that container's starts the engine's answer, forever."""
    await stack.deploy("shop")
    first = await wait_for(lambda: stack.running_as_desired("shop"), "shop running")
    wedged = first.status.container_id
    refusal = stack.proxy.inject(
        START,
        Respond(500, {"message": f"task {wedged}: already exists"}),
        container=wedged,
    )
    await stack.docker.containers.container(wedged).kill()

    async def replaced() -> DesiredSnapshot | None:
        snap = await stack.running_as_desired("shop")
        return snap if snap and snap.status.container_id != wedged else None

    await wait_for(replaced, "shop running in a fresh container", within_s=30)
    assert [c["Id"] for c in await stack.containers("shop")] != [wedged]
    assert len(await stack.containers("shop")) == 1
    # Given up only after passes of failed starts, each the driver's three tries, not the first.
    assert refusal.hits >= FAILED_STARTS_BEFORE_REPLACING * 3
    given_up = [e for e in await stack.events("shop") if e.reason == "remove v1"]
    assert len(given_up) == 1
    assert "Docker fails every start of it" in given_up[0].message
