"""The operator against a real Docker engine and a real Postgres: every planner case end to end,
drift from outside repaired, refusals and failures reported, nothing foreign touched."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiodocker
import asyncpg
import httpx
import pytest
import standardwebhooks
import structlog
from faultproxy import CREATE, FaultProxy, summary
from prometheus_client import REGISTRY
from receiver import Receiver
from support import Operators, project_containers, remove_containers, wait_for

from tether.api.models import (
    ConditionType,
    Deployment,
    DeploymentSpec,
    DesiredSnapshot,
    DesiredState,
    HttpCheck,
    Principal,
)
from tether.api.settings import Settings
from tether.api.store import Store
from tether.api.vocabulary import WebhookEvent
from tether.api.webhooks import WebhookCreate
from tether.operator.desired import Want
from tether.operator.engine.docker.driver import DockerDriver
from tether.operator.runtimes import engine_runtime
from tether.operator.service import Operator

pytestmark = pytest.mark.docker

WORKLOAD = "tether-test/workload:latest"
ALICE = Principal(owner="alice")
HEALTHY = DeploymentSpec(
    image=WORKLOAD,
    port=8080,
    health=HttpCheck(type="http", path="/healthz"),
    ready_deadline_s=30,
    stop_grace_s=2,
)


@pytest.fixture
async def docker_api(settings: Settings) -> AsyncIterator[aiodocker.Docker]:
    """Docker as an outside actor sees it; removes this test's containers afterwards."""
    docker = aiodocker.Docker()
    yield docker
    await remove_containers(docker, settings.installation_id)
    await docker.close()


@pytest.fixture
async def driver(settings: Settings, docker_api: aiodocker.Docker) -> AsyncIterator[DockerDriver]:
    docker = DockerDriver(settings.docker_url, settings.installation_id)
    yield docker
    await docker.close()


OperatorFactory = Callable[..., Awaitable[Operator]]


@pytest.fixture
async def start_operator(
    settings: Settings, store: Store, driver: DockerDriver, docker_api: aiodocker.Docker
) -> AsyncIterator[OperatorFactory]:
    """Operators stopped before `docker_api` removes the test's containers (which a running
    operator would otherwise recreate)."""
    operators = Operators()

    async def start(**kwargs: Any) -> Operator:
        return operators.start(settings, store, driver, **kwargs)

    yield start
    await operators.stop()


@pytest.fixture
async def operator(start_operator: OperatorFactory) -> Operator:
    return await start_operator()


@pytest.fixture
async def proxied_operator(
    settings: Settings, store: Store, docker_api: aiodocker.Docker, docker_proxy: FaultProxy
) -> AsyncIterator[Operator]:
    """An operator talking to Docker through the proxy, which records every call it makes."""
    driver = DockerDriver(docker_proxy.url, settings.installation_id)
    operators = Operators()
    try:
        yield operators.start(settings, store, driver)
    finally:
        await operators.stop()
        await driver.close()


async def snapshot(store: Store, name: str) -> DesiredSnapshot:
    found = await store.desired(name)
    assert found is not None
    return found


def condition(snap: DesiredSnapshot, kind: ConditionType) -> str | None:
    found = snap.status.condition(kind) if snap.status else None
    return found.status if found else None


async def converged(store: Store, name: str) -> DesiredSnapshot | None:
    """The snapshot once the operator has caught up with the current generation and is done."""
    snap = await snapshot(store, name)
    status = snap.status
    if status is None or status.observed_generation != snap.project.generation:
        return None
    if condition(snap, ConditionType.RECONCILING) != "False":
        return None
    return snap


async def ready(store: Store, name: str) -> DesiredSnapshot | None:
    snap = await converged(store, name)
    return snap if snap and condition(snap, ConditionType.READY) == "True" else None


async def endpoint_answers(snap: DesiredSnapshot) -> bool:
    url = f"http://127.0.0.1:{snap.project.host_port}/healthz"
    async with httpx.AsyncClient() as http:
        try:
            return (await http.get(url, timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False


async def deploy(store: Store, name: str, spec: DeploymentSpec = HEALTHY, **kw: Any) -> None:
    await store.create_project(name, ALICE)
    await store.deploy(name, spec, ALICE, **kw)


async def test_deploy_becomes_ready_with_its_endpoint_answering(
    operator: Operator, store: Store, docker_api: aiodocker.Docker, settings: Settings
) -> None:
    await deploy(store, "shop")
    snap = await wait_for(lambda: ready(store, "shop"), "shop Ready")
    assert await endpoint_answers(snap)
    assert snap.status.phase == "Running"
    assert snap.status.endpoint == f"127.0.0.1:{snap.project.host_port}"
    assert snap.status.running_version == 1
    [container] = await project_containers(docker_api, settings.installation_id, "shop")
    assert container["State"]["Running"]
    assert container["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert container["Id"] == snap.status.container_id
    kinds = [e.kind for e in await store.events("shop", ALICE)]
    assert "converged" in kinds


async def test_stop_then_start_reuses_the_container(
    operator: Operator, store: Store, docker_api: aiodocker.Docker, settings: Settings
) -> None:
    await deploy(store, "shop")
    first = await wait_for(lambda: ready(store, "shop"), "shop Ready")
    await store.set_desired_state("shop", DesiredState.STOPPED, ALICE)
    stopped = await wait_for(lambda: converged(store, "shop"), "shop stopped")
    assert stopped.status.phase == "Stopped"
    assert condition(stopped, ConditionType.READY) == "False"
    [container] = await project_containers(docker_api, settings.installation_id, "shop")
    assert not container["State"]["Running"]

    await store.set_desired_state("shop", DesiredState.RUNNING, ALICE)
    again = await wait_for(lambda: ready(store, "shop"), "shop Ready again")
    assert again.status.container_id == first.status.container_id
    assert await endpoint_answers(again)


@pytest.mark.parametrize("how", ["kill", "stop", "rm"])
async def test_drift_from_outside_is_repaired(
    how: str, operator: Operator, store: Store, docker_api: aiodocker.Docker, settings: Settings
) -> None:
    await deploy(store, "shop")
    before = await wait_for(lambda: ready(store, "shop"), "shop Ready")
    outside = docker_api.containers.container(before.status.container_id)
    if how == "kill":
        await outside.kill()
    elif how == "stop":
        await outside.stop(t=1)
    else:
        await outside.delete(force=True)

    async def repaired() -> bool:
        containers = await project_containers(docker_api, settings.installation_id, "shop")
        return len(containers) == 1 and containers[0]["State"]["Running"]

    await wait_for(repaired, f"shop running again after docker {how}")
    snap = await wait_for(lambda: ready(store, "shop"), "shop Ready after repair")
    assert await endpoint_answers(snap)


async def test_container_started_from_outside_while_desired_stopped_is_stopped_again(
    operator: Operator, store: Store, docker_api: aiodocker.Docker, settings: Settings
) -> None:
    await deploy(store, "shop")
    await wait_for(lambda: ready(store, "shop"), "shop Ready")
    await store.set_desired_state("shop", DesiredState.STOPPED, ALICE)
    snap = await wait_for(lambda: converged(store, "shop"), "shop stopped")
    await docker_api.containers.container(snap.status.container_id).start()

    async def stopped_again() -> bool:
        [container] = await project_containers(docker_api, settings.installation_id, "shop")
        return not container["State"]["Running"]

    await wait_for(stopped_again, "shop stopped again")


async def test_restart_replaces_the_container(
    operator: Operator, store: Store, docker_api: aiodocker.Docker, settings: Settings
) -> None:
    await deploy(store, "shop")
    first = await wait_for(lambda: ready(store, "shop"), "shop Ready")
    await store.restart("shop", ALICE)
    second = await wait_for(lambda: ready(store, "shop"), "shop Ready after restart")
    assert second.status.container_id != first.status.container_id
    [container] = await project_containers(docker_api, settings.installation_id, "shop")
    assert container["Id"] == second.status.container_id
    assert second.project.host_port == first.project.host_port
    assert await endpoint_answers(second)


async def test_healthy_v2_replaces_v1_on_the_same_endpoint(
    operator: Operator, store: Store, docker_api: aiodocker.Docker, settings: Settings
) -> None:
    await deploy(store, "shop")
    first = await wait_for(lambda: ready(store, "shop"), "v1 Ready")
    await store.deploy("shop", HEALTHY.model_copy(update={"env": {"RELEASE": "2"}}), ALICE)
    second = await wait_for(lambda: ready(store, "shop"), "v2 Ready")
    assert second.status.running_version == 2
    [container] = await project_containers(docker_api, settings.installation_id, "shop")
    assert container["Config"]["Labels"]["dev.tether.deployment"] == "2"
    assert "RELEASE=2" in container["Config"]["Env"]
    assert second.project.host_port == first.project.host_port
    assert await endpoint_answers(second)


async def test_v2_that_never_gets_ready_is_rolled_back_to_v1(
    operator: Operator, store: Store, docker_api: aiodocker.Docker, settings: Settings
) -> None:
    await deploy(store, "shop")
    await wait_for(lambda: ready(store, "shop"), "v1 Ready")
    broken = HEALTHY.model_copy(update={"command": ["sleep", "1000"], "ready_deadline_s": 3})
    await store.deploy("shop", broken, ALICE)

    async def rolled_back() -> DesiredSnapshot | None:
        snap = await ready(store, "shop")
        return snap if snap and snap.status.failed_version == 2 else None

    snap = await wait_for(rolled_back, "v1 back after failed rollout of v2")
    assert snap.status.running_version == 1
    assert await endpoint_answers(snap)
    running = [
        c
        for c in await project_containers(docker_api, settings.installation_id, "shop")
        if c["State"]["Running"]
    ]
    assert [c["Config"]["Labels"]["dev.tether.deployment"] for c in running] == ["1"]
    reasons = [e.reason for e in await store.events("shop", ALICE)]
    assert "RolloutFailed" in reasons


# The backoff between failed passes, as documented (planner.retry_delay): 0.5 s after the first
# failure, doubling, ±20 % jitter. Written out, not imported, so that the schedule is what is
# checked.
RETRY_FIRST_S = 0.5
RETRY_JITTER = 0.2
RETRY_LATE_S = 1.0  # one pass's own duration and the timer's lateness, on 2 loaded cores


async def test_missing_image_stalls_and_retries_on_the_backoff_schedule(
    proxied_operator: Operator, store: Store, docker_proxy: FaultProxy
) -> None:
    await deploy(store, "shop", DeploymentSpec(image="tether-test/no-such-image:1"))
    tries = 5  # four gaps: 0.5, 1, 2 and 4 s

    async def retried() -> DesiredSnapshot | None:
        snap = await snapshot(store, "shop")
        return snap if snap.status is not None and snap.status.attempts >= tries else None

    snap = await wait_for(retried, f"{tries} failed attempts", within_s=30)
    assert condition(snap, ConditionType.STALLED) == "True"
    stalled_condition = snap.status.condition(ConditionType.STALLED)
    assert stalled_condition is not None
    assert stalled_condition.reason == "ImageNotFound"
    assert "tether-test/no-such-image:1" in (snap.status.last_error or "")
    # Each attempt is one create that Docker refuses (404): their times are the attempts' times.
    creates = docker_proxy.calls_to(CREATE, project="shop")[:tries]
    assert summary(creates) == [(CREATE, None, 404)] * tries
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(creates)]
    for attempt, gap in enumerate(gaps, start=1):
        base = RETRY_FIRST_S * 2 ** (attempt - 1)
        low, high = base * (1 - RETRY_JITTER), base * (1 + RETRY_JITTER) + RETRY_LATE_S
        assert low <= gap <= high, (attempt, [round(g, 3) for g in gaps])


async def test_foreign_container_holding_the_name_is_left_alone(
    operator: Operator, store: Store, docker_api: aiodocker.Docker, settings: Settings
) -> None:
    name = f"tether-{settings.installation_id}-shop-v1-r0"
    foreign = await docker_api.containers.create(
        {"Image": WORKLOAD, "Cmd": ["sleep", "1000"]}, name=name
    )
    try:
        await deploy(store, "shop")

        async def conflict() -> DesiredSnapshot | None:
            snap = await snapshot(store, "shop")
            stalled = snap.status.condition(ConditionType.STALLED) if snap.status else None
            return snap if stalled and stalled.reason == "NameConflict" else None

        await wait_for(conflict, "NameConflict")
        inspected = await foreign.show()
        assert inspected["State"]["Status"] == "created"
        assert inspected["Name"] == f"/{name}"
    finally:
        await foreign.delete(force=True)


async def test_destroy_removes_containers_then_the_project(
    operator: Operator, store: Store, docker_api: aiodocker.Docker, settings: Settings
) -> None:
    await deploy(store, "shop")
    await wait_for(lambda: ready(store, "shop"), "shop Ready")
    await store.destroy("shop", ALICE)

    async def gone() -> bool:
        return await store.desired("shop") is None

    await wait_for(gone, "project deleted")
    assert await project_containers(docker_api, settings.installation_id, "shop") == []


# The wait before restarting a crashed container, as documented (planner.crash_delay): none after
# a first crash, then 1 s doubling. Written out, not imported, so that the schedule is what is
# checked.
CRASH_DELAYS_S = [0.0, 1.0, 2.0, 4.0]
# On 2 loaded cores: Docker's die event may be stamped a little after the exit the planner counts
# from, and each restart adds the operator's reaction (the event, a pass, the start) to the wait.
CRASH_EARLY_S = 0.25
CRASH_LATE_S = 2.5


async def container_events(
    docker: aiodocker.Docker, container_id: str, since: int
) -> list[tuple[str, float]]:
    """(action, seconds) of the container's starts and deaths since `since`, as Docker stamped
    them, oldest first."""
    subscriber = docker.events.subscribe(
        since=since,
        until=int(time.time()) + 1,  # up to now: the stream ends there
        filters={"type": ["container"], "container": [container_id], "event": ["start", "die"]},
    )
    found: list[tuple[str, float]] = []
    try:
        async with asyncio.timeout(15):
            while (event := await subscriber.get()) is not None:
                found.append((event["Action"], event["timeNano"] / 1e9))
    finally:
        await docker.events.stop()
    return found


async def test_crashing_container_is_restarted_with_a_crash_loop_delay(
    operator: Operator, store: Store, docker_api: aiodocker.Docker
) -> None:
    since = int(time.time()) - 1
    await deploy(store, "shop", DeploymentSpec(image=WORKLOAD, command=["sh", "-c", "exit 3"]))
    crashes = len(CRASH_DELAYS_S) + 1

    async def crash_looping() -> DesiredSnapshot | None:
        snap = await snapshot(store, "shop")
        return snap if snap.status and snap.status.crash_count >= crashes else None

    snap = await wait_for(crash_looping, f"{crashes} crashes")
    assert snap.status.last_exit_code == 3
    assert snap.status.phase in ("CrashLoop", "Starting")
    assert snap.status.last_crash_at is not None
    assert snap.status.container_id is not None
    events = (await container_events(docker_api, snap.status.container_id, since))[: 2 * crashes]
    assert [action for action, _ in events] == ["start", "die"] * crashes, events
    starts = [at for action, at in events if action == "start"]
    deaths = [at for action, at in events if action == "die"]
    # From each crash to the next start: the delay of that crash in the loop, never a tight loop.
    gaps = [start - died for died, start in zip(deaths, starts[1:], strict=False)]
    for crash, (gap, delay) in enumerate(zip(gaps, CRASH_DELAYS_S, strict=True), start=1):
        assert delay - CRASH_EARLY_S <= gap <= delay + CRASH_LATE_S, (
            crash,
            [round(g, 3) for g in gaps],
        )


async def test_two_operators_never_act_at_once(
    start_operator: OperatorFactory, store: Store
) -> None:
    first = await start_operator()
    second = await start_operator()
    await deploy(store, "shop")
    await wait_for(lambda: ready(store, "shop"), "shop Ready")
    assert [first.holds_lease(), second.holds_lease()].count(True) == 1


PASS_FIELDS = {
    "project",
    "generation",
    "observed",
    "desired",
    "action",
    "result",
    "docker_status",
    "attempt",
    "next_delay_s",
    "duration_ms",
    "pass_id",
}


async def test_each_pass_logs_one_outcome_line_with_every_field_and_no_env_values(
    settings: Settings, store: Store, driver: DockerDriver
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    operator = Operator(settings, store, engine_runtime(settings, driver))
    operator.lease.assume_held()  # run passes by hand: no lease task in this test
    await deploy(store, "shop", HEALTHY.model_copy(update={"env": {"TOKEN": secret}}))
    await deploy(store, "nope", DeploymentSpec(image="tether-test/no-such-image:1"))
    with structlog.testing.capture_logs() as logs:
        outcomes = [
            await operator.reconciler.reconcile(name) for name in ("shop", "nope", "shop", "nope")
        ]
    passes = [line for line in logs if line["event"] == "pass"]
    assert len(passes) == len(outcomes) == 4
    for line in passes:
        assert line.keys() >= PASS_FIELDS, PASS_FIELDS - line.keys()
        assert secret not in repr(line)
    assert [p["result"] for p in passes] == [o.result for o in outcomes]
    assert passes[0]["action"] == ["create v1", "start v1", "route v1"]
    assert passes[1]["result"] == "stalled"
    assert passes[1]["docker_status"] == 404
    assert passes[3]["attempt"] == 2


async def test_retry_timers_survive_an_operator_restart(
    start_operator: OperatorFactory, settings: Settings, store: Store, driver: DockerDriver
) -> None:
    operator = Operator(settings, store, engine_runtime(settings, driver))
    operator.lease.assume_held()
    await deploy(store, "nope", DeploymentSpec(image="tether-test/no-such-image:1"))
    for _ in range(5):  # five failures in a row: the next attempt is ~8 s away
        await operator.reconciler.reconcile("nope")
    before = (await snapshot(store, "nope")).status
    assert before.attempts == 5
    assert before.next_attempt_at is not None

    await start_operator()  # a fresh operator process, as after a restart

    async def next_attempt() -> DesiredSnapshot | None:
        snap = await snapshot(store, "nope")
        return snap if snap.status.attempts > before.attempts else None

    after = (await wait_for(next_attempt, "the next attempt", within_s=30)).status
    assert after.attempts == before.attempts + 1
    # Not run at start, but at the time the previous operator had scheduled.
    assert after.updated_at >= before.next_attempt_at - timedelta(milliseconds=50)


async def test_desired_changes_still_arrive_after_the_listen_connection_is_cut(
    start_operator: OperatorFactory, settings: Settings, store: Store, database_url: str
) -> None:
    settings.resync_interval_s = 3600  # only NOTIFY (or the resync after reconnecting) can help
    await start_operator()
    await deploy(store, "shop")
    await wait_for(lambda: ready(store, "shop"), "shop Ready")
    admin = await asyncpg.connect(database_url)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query = 'LISTEN \"tether_desired\"' AND datname = current_database()"
        )
    finally:
        await admin.close()
    assert killed == 1
    await store.set_desired_state("shop", DesiredState.STOPPED, ALICE)
    snap = await wait_for(lambda: converged(store, "shop"), "shop stopped", within_s=20)
    assert snap.status.phase == "Stopped"


async def test_a_ready_project_whose_endpoint_stops_answering_is_not_shown_ready(
    start_operator: OperatorFactory,
    settings: Settings,
    store: Store,
    docker_api: aiodocker.Docker,
) -> None:
    settings.resync_interval_s = 1.0
    await start_operator()
    await deploy(store, "shop")
    snap = await wait_for(lambda: ready(store, "shop"), "shop Ready")
    # The container keeps running, but its health endpoint starts failing (404).
    container = docker_api.containers.container(snap.status.container_id)
    run = await container.exec(["rm", "/www/healthz"])
    await run.start(detach=True)

    async def unready() -> DesiredSnapshot | None:
        current = await snapshot(store, "shop")
        return current if condition(current, ConditionType.READY) == "False" else None

    shown = await wait_for(unready, "Ready to turn False")
    assert shown.status.phase == "Unhealthy"
    assert (await container.show())["State"]["Running"]


async def test_a_resync_of_converged_projects_costs_one_list_of_each_kind_and_no_inspect(
    operator: Operator, settings: Settings, store: Store, docker_proxy: FaultProxy
) -> None:
    names = [f"p{i}" for i in range(5)]
    for name in names:
        await deploy(store, name)
    for name in names:
        await wait_for(lambda name=name: ready(store, name), f"{name} Ready")
    # An operator whose every Docker call (list, inspect, ping, anything) the proxy records.
    counted = DockerDriver(docker_proxy.url, settings.installation_id)
    quiet = Operator(settings, store, engine_runtime(settings, counted))
    try:
        await counted.list_all()  # aiodocker asks the engine's API version on its first call
        before = len(docker_proxy.calls)
        assert await quiet.resync() == 0  # nothing to do: every project is at rest
        made = docker_proxy.calls[before:]
    finally:
        await counted.close()
    # The containers, and the volumes (the driver's index learns which projects have any).
    assert sorted((c.method, c.path) for c in made) == [
        ("GET", "/containers/json"),
        ("GET", "/volumes"),
    ], summary(made)


async def test_docker_calls_in_flight_never_exceed_the_cap(settings: Settings) -> None:
    driver = DockerDriver(settings.docker_url, settings.installation_id, concurrency=3)
    in_flight = peak = 0
    release = asyncio.Event()

    async def call() -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await release.wait()
        in_flight -= 1

    try:
        calls = [asyncio.create_task(driver.call("test", call)) for _ in range(10)]
        await wait_for(lambda: _true_when(in_flight == 3), "three calls in flight")
        release.set()
        await asyncio.gather(*calls)
    finally:
        await driver.close()
    assert peak == 3


def want_of(project: str, spec: DeploymentSpec) -> Want:
    deployment = Deployment(
        project=project,
        version=1,
        created_by="alice",
        created_at=datetime.now(UTC),
        **spec.model_dump(),
    )
    return Want(
        deployment=deployment,
        spec_hash=f"hash-{project}",
        restart_token=0,
        name=f"tether-{uuid.uuid4().hex[:8]}-{project}",
    )


async def test_docker_events_wake_the_operator_except_the_echoes_of_its_own_actions(
    driver: DockerDriver, docker_api: aiodocker.Docker
) -> None:
    """The pass that acts observes the outcome itself: the events its own create, start, stop
    and remove cause must not queue another pass. A crash right after its start must, even
    after a stop that Docker found had nothing to do."""
    seen: list[str] = []

    async def listen() -> None:
        async for project in driver.events(since=time.time()):
            seen.append(project)

    async def exited() -> bool:
        return [c.state for c in await driver.observe("crash")] == ["exited"]

    listener = asyncio.create_task(listen())
    quiet = DeploymentSpec(image=WORKLOAD, stop_grace_s=1)
    try:
        for project, spec in (
            ("own", quiet),
            ("crash", DeploymentSpec(image=WORKLOAD, command=["sh", "-c", "exit 3"])),
            ("outside", quiet),
        ):
            await driver.create(project, want_of(project, spec))
        [own, crash, outside] = [
            (await driver.observe(project))[0].id for project in ("own", "crash", "outside")
        ]
        await driver.start(own)
        await driver.stop(own, grace_s=1)
        await driver.remove(own)
        for _ in range(2):
            await driver.start(crash)  # exits at once: Docker says "die", tether did not stop it
            await wait_for(exited, "crash exited")
            await driver.stop(crash, grace_s=1)  # already stopped: Docker does nothing (304)
        await docker_api.containers.container(outside).start()  # someone else's action
        await wait_for(
            lambda: _true_when(seen.count("crash") == 2 and "outside" in seen), "the events"
        )
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    # Docker sends a container's events in order: "own"'s came before "outside"'s start.
    assert sorted(seen) == ["crash", "crash", "outside"]


async def _true_when(condition: bool) -> bool:
    return condition


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_move_during_a_deploy(operator: Operator, store: Store) -> None:
    before = {
        "passes": sample("tether_passes_total", result="converged"),
        "converged": sample("tether_convergence_seconds_count"),
        "creates": sample("tether_docker_calls_total", operation="create", status="ok"),
    }
    await deploy(store, "shop")
    await wait_for(lambda: ready(store, "shop"), "shop Ready")
    assert sample("tether_passes_total", result="converged") > before["passes"]
    assert sample("tether_convergence_seconds_count") > before["converged"]
    assert sample("tether_docker_calls_total", operation="create", status="ok") == (
        before["creates"] + 1
    )


async def test_readiness_reports_docker_and_both_triggers(operator: Operator) -> None:
    async def ready_now() -> dict[str, bool] | None:
        report = await operator.readiness()
        return report if all(report.values()) else None

    report = await wait_for(ready_now, "docker, notify listener and events stream up")
    assert report == {
        "docker": True,
        "proxy": True,
        "notify_listener": True,
        "docker_events": True,
        "active": True,
    }


async def test_each_kind_of_outcome_reaches_a_webhook_in_order(
    operator: Operator, store: Store, docker_api: aiodocker.Docker, settings: Settings
) -> None:
    """A hook for every event, a real receiver, the operator's own passes: converged, drift
    repaired (its container removed from outside), a crash (killed from outside: exit code 137),
    a failed rollout (and what serves instead), and the project deleted; each signed; and a
    project whose image does not exist, stalled (with the reason)."""
    receiver = Receiver()
    await receiver.start()
    try:
        events = [e.value for e in WebhookEvent]
        created = await store.create_webhook(WebhookCreate(url=receiver.url, events=events), ALICE)
        await deploy(store, "lost", DeploymentSpec(image="tether-test/no-such-image:1"))
        await deploy(store, "shop")
        first = await wait_for(lambda: ready(store, "shop"), "v1 Ready")
        await docker_api.containers.container(first.status.container_id).delete(force=True)
        second = await wait_for(lambda: replaced(store, first), "v1 Ready in a new container")
        await docker_api.containers.container(second.status.container_id).kill()
        await wait_for(lambda: crashed(store), "the crash recorded")
        await wait_for(lambda: ready(store, "shop"), "v1 Ready after the crash")
        broken = HEALTHY.model_copy(update={"command": ["sleep", "1000"], "ready_deadline_s": 3})
        await store.deploy("shop", broken, ALICE)
        await wait_for(lambda: rolled_back(store), "v1 back after the failed rollout of v2")
        destroyed = await store.destroy("shop", ALICE)
        assert destroyed.changed

        def told() -> dict[str, dict[str, Any]]:
            # Each delivery once, by webhook-id (at least once: a receiver dedupes).
            payloads = {r.headers["webhook-id"]: r for r in receiver.received}
            return {r.payload["type"]: r.payload for r in payloads.values()}

        async def everything() -> dict[str, dict[str, Any]] | None:
            found = told()
            return found if set(found) >= {*events} else None

        payloads = await wait_for(everything, "every kind of event delivered", within_s=60)
    finally:
        await receiver.stop()
    for request in receiver.received:
        standardwebhooks.Webhook(created.secret).verify(request.body, request.headers)
    order = list(
        dict.fromkeys(
            r.payload["type"] for r in receiver.received if r.payload["data"]["project"] == "shop"
        )
    )
    assert order.index("drift_repaired") < order.index("crash_loop")
    assert order.index("crash_loop") < order.index("rollout_failed") < order.index("deleted")
    drift = payloads["drift_repaired"]["data"]
    assert drift["message"].startswith("converged, then changed outside tether: found ")
    crash = payloads["crash_loop"]["data"]
    assert crash["status"]["last_exit_code"] == 137
    assert crash["status"]["crash_count"] >= 1
    assert "exited with code 137" in crash["message"]
    rollout = payloads["rollout_failed"]["data"]
    assert "going back to v1" in rollout["message"]
    assert rollout["status"]["serving_version"] == 1
    assert payloads["deleted"]["data"]["project"] == "shop"
    stalled = payloads["stalled"]["data"]
    assert stalled["project"] == "lost"
    assert stalled["reason"] == "ImageNotFound"
    assert "no-such-image" in stalled["message"]


async def replaced(store: Store, before: DesiredSnapshot) -> DesiredSnapshot | None:
    snap = await ready(store, "shop")
    return snap if snap and snap.status.container_id != before.status.container_id else None


async def crashed(store: Store) -> bool:
    snap = await snapshot(store, "shop")
    return snap.status is not None and snap.status.last_exit_code == 137


async def rolled_back(store: Store) -> bool:
    snap = await ready(store, "shop")
    return snap is not None and snap.status.failed_version == 2
