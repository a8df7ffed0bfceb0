"""The planner on its own: table-style cases for every decision it makes, and a property test that
drives it against a small model of Docker from random observed states.

Pure: no Docker, no Postgres, no event loop. Times are fixed, never read from the clock.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from convergence import CONVERGING, PLANNING, deleted, event, plans_nothing
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.api.models import Deployment, EventKind, HttpCheck, Strategy, VolumeMount
from tether.operator.desired import Desired, Memory, Volume, Want, effective_want, volume_name
from tether.operator.engine.planner import (
    CRASH_DELAY_CAP_S,
    CRASH_RESET_AFTER,
    TRANSITION_RECHECK_S,
    Action,
    Create,
    CreateVolume,
    Remove,
    Start,
    Stop,
    Unpause,
    at_rest,
    crash_delay,
    plan,
)
from tether.operator.engine.state import Container, Observed, Summary, VolumeSeen
from tether.operator.healthgate import HEALTH_RECHECK_MIN_S
from tether.operator.retry import retry_delay
from tether.operator.routing import HELD, RemoveRoute, Route, SetRoute
from tether.operator.runtime import Decision, FailRollout, Finalize

PROJECT = "shop"
TOKEN = 1  # the project's current restart token
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
CHANGED = T0 - timedelta(hours=1)  # the last desired change, unless a test says otherwise
INTERVAL_S = 2.0
DEADLINE_S = 60


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def deployment(
    version: int,
    *,
    deadline: int = DEADLINE_S,
    grace: int = 10,
    interval: float = INTERVAL_S,
    health: bool = True,
    strategy: Strategy | None = "start-first",
    drain: int = 30,
    volumes: tuple[VolumeMount, ...] = (),
) -> Deployment:
    """`strategy` None: the deployment leaves it to its volumes (stop-first with a writable
    one)."""
    chosen = {} if strategy is None else {"strategy": strategy}
    return Deployment(
        project=PROJECT,
        version=version,
        image=f"shop:{version}",
        port=8080,
        health=HttpCheck(type="http", path="/healthz", interval_s=interval) if health else None,
        ready_deadline_s=deadline,
        stop_grace_s=grace,
        drain_timeout_s=drain,
        created_by="t",
        created_at=T0 - timedelta(days=1),
        volumes=list(volumes),
        **chosen,
    )


def want(
    version: int,
    *,
    token: int | None = TOKEN,
    deadline: int = DEADLINE_S,
    grace: int = 10,
    interval: float = INTERVAL_S,
    health: bool = True,
    strategy: Strategy | None = "start-first",
    drain: int = 30,
    volumes: tuple[VolumeMount, ...] = (),
) -> Want:
    """What `build_desired` makes: a target carries the project's restart token, a fallback None;
    both are named after the project's current token."""
    spec = deployment(
        version,
        deadline=deadline,
        grace=grace,
        interval=interval,
        health=health,
        strategy=strategy,
        drain=drain,
        volumes=volumes,
    )
    return Want(
        deployment=spec,
        spec_hash=f"spec-v{version}",
        restart_token=token,
        name=f"tether-{PROJECT}-v{version}-r{TOKEN}",
    )


V1 = want(1, token=None)  # the fallback: last seen Ready
V2 = want(2)  # the target


def desired(
    target: Want | None = V2,
    fallback: Want | None = None,
    *,
    running: bool = True,
    deleting: bool = False,
    changed_at: datetime = CHANGED,
) -> Desired:
    named = sorted(
        {v.name for w in (target, fallback) if w is not None for v in w.deployment.volumes}
    )
    return Desired(
        volumes=tuple(Volume(n, docker_volume(n)) for n in named),
        name=PROJECT,
        generation=7,
        running=running,
        deleting=deleting,
        host_port=20000,
        target=target,
        fallback=fallback,
        changed_at=changed_at,
    )


def docker_volume(name: str) -> str:
    return volume_name("default", PROJECT, name)


DATA = VolumeMount(name="data", path="/var/lib/app")
CONFIG = VolumeMount(name="config", path="/etc/app", read_only=True)


def ctr(
    cid: str,
    state: str,
    version: int = 2,
    *,
    token: int = TOKEN,
    spec_hash: str | None = None,
    created: datetime | None = None,
    started: datetime | None = None,
    finished: datetime | None = None,
    exit_code: int | None = None,
    oom: bool = False,
) -> Container:
    """A container; one that runs has its port published on loopback, at an upstream of its
    own."""
    if started is None and state != "created":
        started = T0 - timedelta(minutes=30)
    if finished is None and state in ("exited", "dead"):
        finished = CHANGED - timedelta(minutes=1)  # stopped before the last change: not a crash
    if exit_code is None and state in ("exited", "dead"):
        exit_code = 0
    return Container(
        id=cid,
        name=f"tether-{PROJECT}-v{version}-r{token}",
        state=state,
        version=version,
        restart_token=token,
        spec_hash=spec_hash or f"spec-v{version}",
        exit_code=exit_code,
        oom_killed=oom,
        upstream=upstream_of(cid) if state in ("running", "paused", "restarting") else None,
        created_at=created,
        started_at=started,
        finished_at=finished,
    )


def upstream_of(cid: str) -> str:
    return f"127.0.0.1:{40000 + zlib.crc32(cid.encode()) % 20000}"


def routed_to(container: Container, since: datetime = T0 - timedelta(minutes=5)) -> Route:
    assert container.upstream is not None
    return Route("http", container.upstream, since.timestamp(), PROJECT)


def held(since: datetime = T0) -> Route:
    return Route("http", HELD, since.timestamp(), PROJECT)


def decide(
    d: Desired,
    *containers: Container,
    healthy: tuple[str, ...] = (),
    memory: Memory | None = None,
    now: datetime = T0,
    unstartable: frozenset[str] = frozenset(),
    route: Route | Literal["serving"] | None = "serving",
    in_flight: dict[str, int] | None = None,
    volumes: tuple[str, ...] = (),
) -> Decision:
    """With `route` left as "serving", the endpoint of a project desired running routes to the
    first container that runs and answers (none: no route), so that a test not about routing
    need not say it."""
    if route == "serving" and not (d.running and not d.deleting):
        route = None
    if route == "serving":
        answering = [c for c in containers if c.state == "running" and c.id in healthy]
        route = routed_to(answering[0]) if answering else None
    observed = Observed(
        containers,
        now,
        {c.id: c.id in healthy for c in containers},
        unstartable,
        route,
        in_flight or {},
        tuple(VolumeSeen(docker_volume(v), v) for v in volumes),
    )
    return plan(d, observed, memory or Memory())


# --- nothing, stopped, paused -------------------------------------------------------------------


def test_nothing_is_created() -> None:
    decision = decide(desired())
    assert decision.action == Create(V2)
    assert (decision.phase, decision.ready, decision.requeue_after) == ("Creating", False, None)


def test_created_container_is_started() -> None:
    created = ctr("a", "created")
    assert created.started_at is None  # what Docker reports for a container never started
    decision = decide(desired(), created)
    assert decision.action == Start(created)


def test_created_container_with_an_earlier_start_is_started() -> None:
    created = ctr("a", "created", started=T0 - s(5))
    assert decide(desired(), created).action == Start(created)


def test_exited_before_the_last_change_is_started_without_crash_bookkeeping() -> None:
    exited = ctr("a", "exited", finished=CHANGED - s(1), exit_code=137)
    decision = decide(desired(), exited)
    assert decision.action == Start(exited)
    assert decision.reason == "Starting"
    assert decision.memory == Memory()


def test_a_container_docker_cannot_start_is_removed_then_created_afresh() -> None:
    wedged = ctr("a", "exited", finished=T0 - s(1), started=CHANGED + s(1), exit_code=137)
    unstartable = frozenset({"a"})
    decision = decide(desired(), wedged, unstartable=unstartable)
    assert decision.action == Remove(wedged)
    assert (decision.phase, decision.reason) == ("Replacing", "Unstartable")
    assert decide(desired(), unstartable=unstartable).action == Create(V2)


def test_paused_target_is_unpaused() -> None:
    paused = ctr("a", "paused")
    decision = decide(desired(), paused)
    assert decision.action == Unpause(paused)
    assert decision.workload == paused


def test_running_with_no_target_is_stopped_then_removed() -> None:
    d = desired(target=None)
    running = ctr("a", "running")
    assert decide(d, running).action == Stop(running, 10)
    exited = ctr("a", "exited")
    assert decide(d, exited).action == Remove(exited)
    rest = decide(d)
    assert (rest.action, rest.requeue_after, rest.phase) == (None, None, "Stopped")


# --- replacement: start first, health-gated route switch, drain --------------------------------

STOP_FIRST_V2 = want(2, strategy="stop-first")


def test_replacement_starts_the_new_deployment_beside_the_old_one() -> None:
    old = ctr("old", "running", 1)
    decision = decide(desired(V2, V1), old, healthy=("old",), route=routed_to(old))
    assert decision.action == Create(V2)
    assert decision.phase == "Creating"


def test_replacement_waits_for_health_with_the_old_one_serving() -> None:
    old = ctr("old", "running", 1)
    new = ctr("new", "running", started=T0 - s(10))
    decision = decide(desired(V2, V1), old, new, healthy=("old",), route=routed_to(old))
    assert decision.action is None
    assert decision.requeue_after == INTERVAL_S
    assert (decision.reason, decision.ready, decision.stalled) == (
        "HealthCheckPending",
        False,
        False,
    )
    assert decision.workload == new


def test_replacement_routes_to_the_new_one_once_it_answers() -> None:
    old = ctr("old", "running", 1)
    new = ctr("new", "running", started=T0 - s(10))
    decision = decide(desired(V2, V1), old, new, healthy=("old", "new"), route=routed_to(old))
    assert isinstance(decision.action, SetRoute)
    assert decision.action.route == Route("http", upstream_of("new"), T0.timestamp(), PROJECT)
    assert (decision.action.version, decision.action.kind) == (2, EventKind.ROUTED)
    assert decision.message.endswith(f"; {old.name} drains")


def test_the_old_one_drains_what_it_has_in_flight_before_it_stops() -> None:
    old = ctr("old", "running", 1)
    new = ctr("new", "running", started=T0 - s(10))
    switched = routed_to(new, since=T0 - s(2))
    decision = decide(
        desired(V2, V1),
        old,
        new,
        healthy=("new",),
        route=switched,
        in_flight={upstream_of("old"): 3},
    )
    assert decision.action is None
    assert (decision.reason, decision.ready, decision.ready_version) == ("Draining", True, 2)
    assert decision.requeue_after is not None
    assert 0 < decision.requeue_after <= 0.2


def test_a_drained_old_one_is_stopped_with_its_own_grace_then_removed() -> None:
    fallback = want(1, token=None, grace=25)
    old = ctr("old", "running", 1)
    new = ctr("new", "running", started=T0 - s(10))
    switched = routed_to(new, since=T0 - s(2))
    decision = decide(desired(V2, fallback), old, new, healthy=("new",), route=switched)
    assert decision.action == Stop(old, 25, drained=True)
    assert decision.action.kind == EventKind.DRAINED
    assert decision.ready
    stopped = replace(old, state="exited", upstream=None, finished_at=T0)
    assert decide(desired(V2, V1), stopped, new, healthy=("new",), route=switched).action == (
        Remove(stopped)
    )


def test_a_drain_that_outlasts_its_timeout_is_cut_short() -> None:
    old = ctr("old", "running", 1)
    new = ctr("new", "running", started=T0 - s(60))
    switched = routed_to(new, since=T0 - s(31))  # the default drain timeout is 30 s
    decision = decide(
        desired(V2, V1), old, new, healthy=("new",), route=switched, in_flight={old.upstream: 1}
    )
    assert decision.action == Stop(old, 10, drained=True)
    assert "1 still in flight" in decision.message


def test_a_stray_container_is_stopped_with_the_default_grace_once_the_target_serves() -> None:
    stray = ctr("x", "running", 9)
    new = ctr("new", "running")
    decision = decide(
        desired(want(2, grace=3), V1), stray, new, healthy=("new",), route=routed_to(new)
    )
    assert decision.action == Stop(stray, 10, drained=True)


def test_stop_first_holds_new_connections_then_stops_the_old_deployment() -> None:
    fallback = want(1, token=None, grace=25)
    old = ctr("old", "running", 1)
    decision = decide(desired(STOP_FIRST_V2, fallback), old, healthy=("old",), route=routed_to(old))
    assert isinstance(decision.action, SetRoute)
    assert decision.action.route.held
    assert decision.action.label == "hold"
    decision = decide(desired(STOP_FIRST_V2, fallback), old, healthy=("old",), route=held())
    assert decision.action == Stop(old, 25)  # the old deployment's own grace period
    assert decision.phase == "Replacing"
    assert not decision.ready


def test_stop_first_lets_the_old_deployment_finish_what_it_has_in_flight() -> None:
    old = ctr("old", "running", 1)
    decision = decide(
        desired(STOP_FIRST_V2, V1),
        old,
        healthy=("old",),
        route=held(since=T0 - s(1)),
        in_flight={upstream_of("old"): 2},
    )
    assert (decision.action, decision.reason) == (None, "Draining")


def test_stop_first_unpauses_a_paused_old_deployment_to_stop_it() -> None:
    old = ctr("old", "paused", 1)
    assert decide(desired(STOP_FIRST_V2, V1), old, route=held()).action == Unpause(old)


def test_stop_first_creates_the_target_once_the_old_one_is_stopped() -> None:
    old = ctr("old", "exited", 1, finished=T0 - s(1))
    decision = decide(desired(STOP_FIRST_V2, V1), old, route=held())
    assert decision.action == Create(STOP_FIRST_V2)
    assert decision.phase == "Creating"


def test_a_route_to_a_container_that_is_gone_is_held() -> None:
    crashed = ctr("a", "exited", finished=T0 - s(1), started=CHANGED + s(1), exit_code=137)
    stale = Route("http", "127.0.0.1:39999", T0.timestamp() - 60, PROJECT)
    decision = decide(desired(), crashed, route=stale)
    assert isinstance(decision.action, SetRoute)
    assert decision.action.route.held
    assert decision.reason == "Holding"


def test_a_route_to_a_container_that_stopped_answering_is_held() -> None:
    ready = ctr("a", "running")
    decision = decide(desired(), ready, route=routed_to(ready), memory=Memory(ready_container="a"))
    assert isinstance(decision.action, SetRoute)
    assert decision.action.route.held


def test_a_held_route_goes_to_the_target_once_it_answers() -> None:
    ready = ctr("a", "running")
    decision = decide(desired(), ready, healthy=("a",), route=held())
    assert isinstance(decision.action, SetRoute)
    assert decision.action.route.upstream == ready.upstream


def test_a_routed_ready_target_is_at_rest() -> None:
    ready = ctr("a", "running")
    decision = decide(desired(), ready, healthy=("a",), route=routed_to(ready))
    assert (decision.action, decision.requeue_after, decision.ready) == (None, None, True)


def test_a_deployment_without_a_port_is_never_routed() -> None:
    portless = Want(
        deployment=deployment(2, health=False).model_copy(update={"port": None}),
        spec_hash="spec-v2",
        restart_token=TOKEN,
        name=V2.name,
    )
    running = ctr("a", "running")
    decision = decide(desired(portless), running, healthy=("a",), route=None)
    assert (decision.action, decision.ready) == (None, True)
    left = decide(desired(portless), running, healthy=("a",), route=routed_to(running))
    assert left.action == RemoveRoute(20000)


def test_a_new_restart_token_starts_a_fresh_container_beside_the_old() -> None:
    stale = ctr("stale", "running", 2, token=TOKEN - 1)
    assert decide(desired(), stale, healthy=("stale",)).action == Create(V2)


def test_a_changed_spec_is_not_adopted_and_gives_up_the_name_it_holds() -> None:
    other_spec = ctr("a", "running", spec_hash="spec-before")
    hold = decide(desired(), other_spec, healthy=("a",))
    assert isinstance(hold.action, SetRoute)
    assert hold.action.route.held
    decision = decide(desired(), other_spec, healthy=("a",), route=held())
    assert decision.action == Stop(other_spec, 10, drained=True)  # it serves nothing now


def test_a_container_holding_the_wanted_name_is_removed_before_create() -> None:
    holder = ctr("a", "exited", spec_hash="spec-before", finished=T0 - s(5))
    assert holder.name == V2.name
    assert decide(desired(), holder).action == Remove(holder)


# --- readiness, deadline, rollback --------------------------------------------------------------


def test_running_healthy_target_is_ready_and_at_rest() -> None:
    running = ctr("a", "running")
    decision = decide(desired(), running, healthy=("a",))
    assert decision.action is None
    assert decision.requeue_after is None
    assert (decision.ready, decision.stalled, decision.ready_version) == (True, False, 2)
    assert decision.workload == running
    assert decision.phase == "Running"


def test_a_container_just_started_is_probed_again_soon_however_old_the_desire() -> None:
    # In a bulk start, a project's container can start seconds after its desired change.
    running = ctr("a", "running", created=T0 - s(3600), started=T0 - s(0.1))
    decision = decide(desired(changed_at=T0 - s(6)), running)
    assert decision.reason == "HealthCheckPending"
    assert decision.requeue_after == HEALTH_RECHECK_MIN_S


def test_running_target_not_yet_healthy_within_its_deadline_waits() -> None:
    running = ctr("a", "running", started=T0 - s(DEADLINE_S - 1))
    decision = decide(desired(V2, V1), running)
    assert decision.action is None
    assert decision.requeue_after == INTERVAL_S
    assert not decision.ready
    assert not decision.stalled


def test_without_a_health_check_the_recheck_interval_is_one_second() -> None:
    target = want(2, health=False)
    running = ctr("a", "running", started=T0 - s(10))
    assert decide(desired(target), running).requeue_after == 1.0


@pytest.mark.parametrize(
    ("waited", "expected"), [(0.0, 0.05), (0.1, 0.05), (1.0, 0.25), (4.0, 1.0), (30.0, 2.0)]
)
def test_a_starting_endpoint_is_probed_soon_then_at_the_checks_interval(
    waited: float, expected: float
) -> None:
    running = ctr("a", "running", started=T0 - s(waited))
    assert decide(desired(V2, V1), running).requeue_after == pytest.approx(expected)


def test_past_the_deadline_with_a_fallback_the_rollout_fails() -> None:
    running = ctr("a", "running", started=T0 - s(DEADLINE_S))
    decision = decide(desired(V2, V1), running)
    assert decision.action == FailRollout(2)
    assert decision.reason == "RolloutFailed"


def test_effective_want_is_the_fallback_after_a_failed_rollout() -> None:
    d = desired(V2, V1)
    assert effective_want(d, Memory()) is V2
    assert effective_want(d, Memory(failed_version=2)) is V1
    assert effective_want(d, Memory(failed_version=1)) is V2  # a stale failure of another version
    assert effective_want(desired(V2), Memory(failed_version=2)) is V2  # nowhere to go back to


def test_after_a_failed_stop_first_rollout_the_target_is_stopped_first() -> None:
    failed = Memory(failed_version=2)
    new = ctr("new", "running", started=T0 - s(DEADLINE_S + 5))
    old = ctr("old", "exited", 1, finished=CHANGED - s(1))
    fallback = want(1, token=None, strategy="stop-first")
    decision = decide(desired(STOP_FIRST_V2, fallback), old, new, memory=failed, route=held())
    assert decision.action == Stop(new, 10)
    assert decision.workload == old


def test_after_a_failed_rollout_the_old_one_serves_on_and_the_target_is_stopped() -> None:
    failed = Memory(failed_version=2)
    new = ctr("new", "running", started=T0 - s(DEADLINE_S + 5))
    old = ctr("old", "running", 1)
    decision = decide(desired(V2, V1), old, new, healthy=("old",), memory=failed)
    assert decision.action == Stop(new, 10, drained=True)
    assert (decision.workload, decision.ready, decision.ready_version) == (old, True, 1)


def test_after_a_failed_rollout_the_fallback_is_started_again() -> None:
    failed = Memory(failed_version=2)
    new = ctr("new", "exited", finished=T0 - s(1))
    old = ctr("old", "exited", 1, token=0, finished=CHANGED - s(1))  # any token will do
    decision = decide(desired(V2, V1), old, new, memory=failed)
    assert decision.action == Start(old)
    assert decision.memory == failed


def test_after_a_failed_rollout_a_missing_fallback_is_created_again() -> None:
    failed = Memory(failed_version=2)
    new = ctr("new", "exited", finished=T0 - s(1))
    decision = decide(desired(V2, V1), new, memory=failed)
    assert decision.action == Create(V1)
    assert decision.phase == "RollingBack"


def test_after_a_failed_rollout_the_healthy_fallback_is_ready_and_the_target_removed() -> None:
    failed = Memory(failed_version=2)
    new = ctr("new", "exited", finished=T0 - s(1))
    old = ctr("old", "running", 1, started=T0 - s(3))
    decision = decide(desired(V2, V1), old, new, healthy=("old",), memory=failed)
    assert decision.action == Remove(new)
    assert (decision.ready, decision.ready_version) == (True, 1)
    rest = decide(desired(V2, V1), old, healthy=("old",), memory=failed)
    assert (rest.action, rest.requeue_after, rest.ready) == (None, None, True)


def test_an_unhealthy_fallback_is_stalled_not_rolled_back_again() -> None:
    failed = Memory(failed_version=2)
    old = ctr("old", "running", 1, started=T0 - s(DEADLINE_S + 1))
    decision = decide(desired(V2, V1), old, memory=failed)
    assert decision.action is None
    assert decision.stalled


def test_a_rollback_does_not_count_the_stop_first_exit_as_a_crash() -> None:
    # v1 was Ready for 5 minutes and had crashed twice before; v2 was deployed at CHANGED, the
    # planner stopped v1 right after, and v2 then missed its deadline.
    before = Memory(crash_count=2, last_crash_at=CHANGED - timedelta(minutes=6), failed_version=2)
    old = ctr(
        "old",
        "exited",
        1,
        started=CHANGED - timedelta(minutes=5),
        finished=CHANGED + s(1),
        exit_code=143,
    )
    new = ctr("new", "exited", finished=T0 - s(1))
    decision = decide(desired(V2, V1), old, new, memory=before)
    assert decision.action == Start(old)
    assert decision.memory.crash_count == 2


def test_a_healthy_container_is_remembered_as_ready() -> None:
    running = ctr("a", "running")
    assert decide(desired(), running, healthy=("a",)).memory.ready_container == "a"


def test_a_ready_container_that_stops_answering_is_unhealthy_not_rolled_back() -> None:
    running = ctr("a", "running", started=T0 - s(DEADLINE_S * 10))
    decision = decide(desired(V2, V1), running, memory=Memory(ready_container="a"))
    assert decision.action is None
    assert decision.reason == "Unhealthy"
    assert decision.requeue_after == INTERVAL_S
    assert not decision.ready
    assert not decision.stalled


def test_past_the_deadline_without_a_fallback_is_stalled_and_removes_nothing() -> None:
    running = ctr("a", "running", started=T0 - s(DEADLINE_S + 1))
    leftover = ctr("old", "exited", 1)
    decision = decide(desired(V2), running, leftover)
    assert decision.action is None
    assert decision.stalled
    assert decision.requeue_after == INTERVAL_S
    assert (decision.reason, decision.workload) == ("Unhealthy", running)


def test_a_crash_looping_target_is_rolled_back_after_its_deadline() -> None:
    # v2 was deployed 10 minutes ago (deadline 60 s) and has crashed every few seconds since.
    d = desired(V2, V1, changed_at=T0 - timedelta(minutes=10))
    memory = Memory(crash_count=9, last_crash_at=T0 - s(30))
    new = ctr(
        "new",
        "exited",
        created=T0 - timedelta(minutes=9),
        started=T0 - s(4),
        finished=T0 - s(2),
        exit_code=1,
    )
    old = ctr("old", "exited", 1, finished=T0 - timedelta(minutes=10))
    decision = decide(d, old, new, memory=memory)
    assert decision.action == FailRollout(2)


# --- desired stopped ----------------------------------------------------------------------------


def test_running_while_desired_stopped_is_stopped() -> None:
    running = ctr("a", "running")
    decision = decide(desired(running=False), running, healthy=("a",))
    assert decision.action == Stop(running, 10)
    assert decision.phase == "Stopping"


def test_paused_while_desired_stopped_is_unpaused_to_be_stopped() -> None:
    paused = ctr("a", "paused")
    assert decide(desired(running=False), paused).action == Unpause(paused)


def test_stopped_target_is_kept_and_others_removed_while_desired_stopped() -> None:
    keep = ctr("a", "exited")
    other = ctr("b", "exited", 1)
    assert decide(desired(running=False), keep, other).action == Remove(other)
    rest = decide(desired(running=False), keep)
    assert (rest.action, rest.requeue_after, rest.workload) == (None, None, keep)
    assert (rest.phase, rest.ready) == ("Stopped", False)


def test_an_exit_while_desired_stopped_is_no_crash() -> None:
    exited = ctr("a", "exited", finished=T0 - s(1), exit_code=1)
    decision = decide(desired(running=False), exited)
    assert decision.action is None
    assert decision.memory == Memory()


# --- duplicates ---------------------------------------------------------------------------------


def test_duplicate_running_targets_keep_the_newest_and_stop_the_rest() -> None:
    older = ctr("a", "running", started=T0 - s(300))
    newer = ctr("b", "running", started=T0 - s(30))
    decision = decide(desired(), older, newer, healthy=("a", "b"), route=routed_to(newer))
    assert decision.action == Stop(older, 10, drained=True)
    assert decision.workload == newer


def test_duplicates_prefer_running_over_paused_created_exited_and_dead() -> None:
    running = ctr("r", "running")
    for state in ("paused", "exited", "dead"):
        dup = ctr("d", state)
        decision = decide(desired(), dup, running, healthy=("r",))
        expected = Unpause(dup) if state == "paused" else Remove(dup)
        assert decision.action == expected, state
        assert decision.workload == running


def test_never_started_duplicates_are_ranked_without_error() -> None:
    # regression: `_best` once computed `datetime.min.timestamp()` here, which raises ValueError
    first, second = ctr("a", "created"), ctr("b", "created")
    decision = decide(desired(), second, first)
    assert decision.action == Start(first)  # then by id
    started_before = ctr("c", "created", started=T0 - s(60))
    assert decide(desired(), first, started_before).action == Start(started_before)


def test_stopped_duplicates_are_removed_only_once_the_kept_one_is_healthy() -> None:
    keep = ctr("a", "running", started=T0 - s(5))
    dup = ctr("b", "exited")
    assert decide(desired(), keep, dup).action is None
    assert decide(desired(), keep, dup, healthy=("a",)).action == Remove(dup)


def test_duplicates_keep_the_healthy_one() -> None:
    serving = ctr("a", "running", started=T0 - s(300))
    starting = ctr("b", "running", started=T0 - s(1))
    decision = decide(desired(), serving, starting, healthy=("a",))
    assert decision.action == Stop(starting, 10, drained=True)
    assert decision.workload == serving


def test_duplicates_while_desired_stopped_keep_one() -> None:
    newer = ctr("a", "exited", started=T0 - s(10), finished=CHANGED - s(1))
    older = ctr("b", "exited", started=T0 - s(300), finished=CHANGED - s(2))
    decision = decide(desired(running=False), older, newer)
    assert decision.action == Remove(older)


# --- Docker's transitional and broken states ----------------------------------------------------


@pytest.mark.parametrize("state", ["removing", "restarting"])
@pytest.mark.parametrize(
    "d",
    [desired(), desired(running=False), desired(deleting=True)],
    ids=["running", "stopped", "deleting"],
)
def test_transitional_states_wait_and_look_again(state: str, d: Desired) -> None:
    moving = ctr("a", state)
    healthy = ctr("b", "running", 1)
    decision = decide(d, healthy, moving, memory=Memory(crash_count=3))
    assert decision.action is None
    assert decision.requeue_after == TRANSITION_RECHECK_S
    assert decision.reason == "DockerTransition"
    assert decision.memory == Memory(crash_count=3)


def test_dead_target_is_removed() -> None:
    dead = ctr("a", "dead")
    decision = decide(desired(), dead)
    assert decision.action == Remove(dead)
    assert decision.reason == "Dead"


def test_dead_other_is_removed_while_desired_stopped() -> None:
    dead = ctr("a", "dead", 1)
    assert decide(desired(running=False), dead).action == Remove(dead)


# --- crashes ------------------------------------------------------------------------------------


def crashed(
    finished: datetime, *, ran: float = 5.0, exit_code: int = 1, oom: bool = False
) -> Container:
    return ctr(
        "a",
        "exited",
        started=finished - s(ran),
        finished=finished,
        exit_code=exit_code,
        oom=oom,
    )


def test_a_first_crash_is_restarted_at_once_and_counted() -> None:
    exit_ = crashed(T0 - s(0.5), exit_code=137, oom=True)
    decision = decide(desired(), exit_)
    assert decision.action == Start(exit_)
    assert decision.reason == "Crashed"
    assert decision.memory == Memory(
        crash_count=1, last_crash_at=exit_.finished_at, last_exit_code=137, oom_killed=True
    )
    assert "137" in decision.message
    assert "out of memory" in decision.message


def test_the_same_exit_is_counted_once() -> None:
    exit_ = crashed(T0 - s(0.2))
    first = decide(desired(), exit_, memory=Memory(crash_count=1))
    assert first.memory.crash_count == 2
    assert first.action is None  # the second crash waits 1 s
    assert first.requeue_after == pytest.approx(0.8)
    again = decide(desired(), exit_, memory=first.memory, now=T0 + s(0.5))
    assert again.memory == first.memory
    assert again.requeue_after == pytest.approx(0.3)
    after = decide(desired(), exit_, memory=again.memory, now=T0 + s(0.9))
    assert after.action == Start(exit_)
    assert after.memory == first.memory


def test_each_distinct_exit_is_counted() -> None:
    memory = Memory()
    for n in range(1, 6):
        exit_ = crashed(T0 + s(1000 * n))
        assert exit_.finished_at is not None
        decision = decide(desired(), exit_, memory=memory, now=exit_.finished_at)
        memory = decision.memory
        assert memory.crash_count == n
        assert memory.last_crash_at == exit_.finished_at
        if n == 1:
            assert decision.action == Start(exit_)
        else:
            assert decision.action is None
            assert decision.reason == "CrashLoopBackOff"
            assert decision.requeue_after == pytest.approx(2.0 ** (n - 2))


def test_the_crash_backoff_is_capped() -> None:
    exit_ = crashed(T0)
    decision = decide(desired(), exit_, memory=Memory(crash_count=30))
    assert decision.requeue_after == CRASH_DELAY_CAP_S
    later = decide(desired(), exit_, memory=decision.memory, now=T0 + s(CRASH_DELAY_CAP_S))
    assert later.action == Start(exit_)


def test_a_crash_after_ten_minutes_of_running_resets_the_count() -> None:
    exit_ = crashed(T0, ran=CRASH_RESET_AFTER.total_seconds())
    decision = decide(desired(), exit_, memory=Memory(crash_count=7, last_crash_at=T0 - s(3600)))
    assert decision.memory.crash_count == 1
    assert decision.action == Start(exit_)


def test_a_crash_just_short_of_ten_minutes_keeps_counting() -> None:
    exit_ = crashed(T0, ran=CRASH_RESET_AFTER.total_seconds() - 1)
    decision = decide(desired(), exit_, memory=Memory(crash_count=7, last_crash_at=T0 - s(3600)))
    assert decision.memory.crash_count == 8


def test_ten_minutes_of_healthy_running_resets_the_count() -> None:
    memory = Memory(crash_count=5, last_crash_at=T0 - s(3600))
    long = ctr("a", "running", started=T0 - CRASH_RESET_AFTER)
    assert decide(desired(), long, healthy=("a",), memory=memory).memory.crash_count == 0
    short = ctr("a", "running", started=T0 - CRASH_RESET_AFTER + s(1))
    assert decide(desired(), short, healthy=("a",), memory=memory).memory.crash_count == 5
    unhealthy = decide(desired(), long, memory=memory)
    assert unhealthy.memory.crash_count == 5


@pytest.mark.parametrize(
    ("count", "delay"),
    [
        (0, 0.0),
        (1, 0.0),
        (2, 1.0),
        (3, 2.0),
        (4, 4.0),
        (9, 128.0),
        (10, 256.0),
        (11, 300.0),
        (50, 300.0),
        (1025, 300.0),
    ],
)
def test_crash_delay(count: int, delay: float) -> None:
    assert crash_delay(count) == delay


def test_crash_delay_stays_capped_for_a_very_long_crash_loop() -> None:
    # 1026 crashes: about 85 hours of crash-looping at the 5 min cap
    assert crash_delay(1026) == CRASH_DELAY_CAP_S


# --- deletion -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("running", Stop),
        ("paused", Unpause),
        ("exited", Remove),
        ("created", Remove),
        ("dead", Remove),
    ],
)
def test_deletion_stops_then_removes(state: str, expected: type[Action]) -> None:
    container = ctr("a", state, started=T0 - s(5))
    decision = decide(desired(deleting=True), container, healthy=("a",))
    assert isinstance(decision.action, expected)
    assert decision.phase == "Deleting"


def test_deletion_with_nothing_left_finalizes() -> None:
    decision = decide(desired(deleting=True, running=False))
    assert decision.action == Finalize()
    assert decision.reason == "Deleted"


# --- retry backoff ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "base"),
    [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (7, 32.0), (8, 60.0), (100, 60.0)],
)
def test_retry_delay_schedule(attempts: int, base: float) -> None:
    assert retry_delay(attempts, 0.0) == pytest.approx(base)
    assert retry_delay(attempts, -1.0) == pytest.approx(base * 0.8)
    assert retry_delay(attempts, 1.0) == pytest.approx(base * 1.2)


def test_retry_delay_stays_capped_after_many_attempts() -> None:
    # the attempt count is persisted in status: 1025 failed passes is about 17 hours at the cap
    assert retry_delay(1025, 0.0) == pytest.approx(60.0)


@given(st.integers(0, 1023), st.floats(-1.0, 1.0))
@settings(PLANNING, max_examples=200)
def test_retry_delay_bounds(attempts: int, jitter: float) -> None:
    delay = retry_delay(attempts, jitter)
    assert 0.4 - 1e-9 <= delay <= 72.0 + 1e-9
    assert delay <= retry_delay(attempts + 1, jitter) + 1e-9  # never shrinks for the same jitter


# --- property: a model of Docker ----------------------------------------------------------------
#
# The model holds the project's containers (id → Container) and a clock. Each step observes the
# model, asks the planner, and applies the action as Docker would: Create adds a "created"
# container with the want's name, labels and spec hash (refused if the name is taken); Start makes
# a created or exited container running at `now`; Stop makes a running one exited at `now`;
# Unpause makes a paused one running; Remove deletes a created, exited or dead one. An action
# Docker would refuse fails the test. FailRollout records the failed version in the memory, as the
# reconciler does, and the planner's memory is carried from one decision to the next. A wait
# (action None with requeue_after) advances the clock past it and settles Docker's transitional
# states: "removing" is gone, "restarting" is running. Health is an oracle per deployment: a
# running container answers once it has run for that deployment's drawn delay, or never; and as
# in the reconciler, the probe goes through the project's endpoint, so every running container
# of the effective want gets the same answer (per-container answers that differ between
# duplicates are pinned separately by `test_duplicates_keep_the_healthy_one`).
#
# Crashes: the planner calls an exit after desired.changed_at a crash. A container the planner
# itself stops to make way (stop-first) exits after changed_at too, and if it later becomes the
# container to keep (a rollback to the fallback, or another duplicate kept) it is counted as a
# crash: the planner cannot tell it apart without more memory than `Memory` holds. The model keeps
# the planner's own stops apart (`stopped_by_planner`), but asserts nothing on crash counts; the
# rollback case is pinned by `test_a_rollback_does_not_count_the_stop_first_exit_as_a_crash`.
# Containers never crash by themselves in the model once it runs.
#
# Volumes: the model also holds the project's Docker volumes. CreateVolume adds a missing one
# (creating one that exists is a planner bug); Create needs every volume its deployment mounts to
# exist already, and the container mounts them. No step ever removes a volume: after every step
# the volumes Docker holds include every one it held before.

OLDER, FALLBACK, TARGET = 1, 2, 3
STATES = ("created", "running", "paused", "exited", "dead", "restarting", "removing")
LIVE = ("running", "paused")
MAX_ACTIONS = 20
MAX_STEPS = 200


class Refused(AssertionError):
    """Docker would refuse this action: the reconciler would make no progress."""


@dataclass
class DockerModel:
    """Docker and the proxy, as far as the planner can tell them apart: containers that publish
    their port on an upstream of their own when they run, one route for the endpoint, and
    requests in flight on the upstreams the route has left."""

    containers: dict[str, Container]
    now: datetime
    healthy_after: dict[int, float | None]  # version → seconds of running before it answers
    route: Route | None = None
    # upstream → when the requests it has in flight are done (None: never)
    busy_until: dict[str, datetime | None] = field(default_factory=dict)
    stopped_by_planner: set[str] = field(default_factory=set)
    serial: int = 0
    volumes: set[str] = field(default_factory=set)  # Docker volume names

    def healthy(self, container: Container) -> bool:
        """Whether its endpoint, probed on its own upstream, answers its health check."""
        delay = self.healthy_after.get(container.version)
        return (
            container.state == "running"
            and delay is not None
            and container.started_at is not None
            and (self.now - container.started_at).total_seconds() >= delay
        )

    def routed(self) -> Container | None:
        if self.route is None or self.route.held:
            return None
        return next(
            (c for c in self.containers.values() if c.upstream == self.route.upstream), None
        )

    def observe(self, d: Desired, want: Want | None) -> Observed:
        """As `EngineRuntime.observe` gives it: the containers of the target and the fallback,
        and the routed one, probed (while the project is desired running)."""
        containers = tuple(self.containers.values())
        routed = self.routed()
        asked = [w for w in (d.target, d.fallback) if w is not None] if want is not None else []
        probed = [c for c in containers if any(w.matches(c) for w in asked) or c == routed]
        in_flight = {
            upstream: 1
            for upstream, until in self.busy_until.items()
            if until is None or until > self.now
        }
        return Observed(
            containers,
            self.now,
            {c.id: self.healthy(c) for c in probed},
            frozenset(),
            self.route,
            in_flight,
            tuple(VolumeSeen(v, v.rsplit(".", 1)[-1]) for v in sorted(self.volumes)),
        )

    def live(self) -> list[Container]:
        return [c for c in self.containers.values() if c.state in LIVE]

    def wait(self, seconds: float) -> None:
        self.now += s(seconds) + s(0.001)
        for cid, c in list(self.containers.items()):
            if c.state == "removing":
                del self.containers[cid]
            elif c.state == "restarting":
                self.containers[cid] = replace(
                    c, state="running", started_at=self.now, upstream=self._upstream()
                )

    def _upstream(self) -> str:
        self.serial += 1
        return f"127.0.0.1:{50000 + self.serial}"  # Docker picks a fresh port at each start

    def apply(self, action: Action, d: Desired) -> None:
        if isinstance(action, CreateVolume):
            assert action.volume.docker_name not in self.volumes, f"{action}: it exists"
            self.volumes.add(action.volume.docker_name)
        elif isinstance(action, SetRoute):
            self.route = action.route
        elif isinstance(action, RemoveRoute):
            self.route = None
        elif isinstance(action, Create):
            w = action.want
            if any(c.name == w.name for c in self.containers.values()):
                raise Refused(f"409: the name {w.name} is taken")
            mounts = tuple(v.docker_name for v in d.volumes_of(w))
            missing = [m for m in mounts if m not in self.volumes]
            assert not missing, f"{action} before its volumes {missing} exist"
            self.serial += 1
            cid = f"new{self.serial}"
            self.containers[cid] = Container(
                id=cid,
                name=w.name,
                state="created",
                version=w.version,
                restart_token=w.restart_token or 0,  # what the driver labels
                spec_hash=w.spec_hash,
                created_at=self.now,
                mounts=mounts,
            )
        else:
            self._apply_to_container(action)
        self.now += s(1)

    def _apply_to_container(self, action: Action) -> None:
        assert isinstance(action, Start | Stop | Unpause | Remove), action
        current = self.containers.get(action.container.id)
        if current != action.container:
            raise Refused(f"{action} acts on a stale view: Docker shows {current}")
        allowed = {
            Start: ("created", "exited"),
            Stop: ("running",),
            Unpause: ("paused",),
            Remove: ("created", "exited", "dead"),
        }[type(action)]
        if current.state not in allowed:
            raise Refused(f"{type(action).__name__} on a {current.state} container")
        cid = current.id
        if isinstance(action, Start):
            self.containers[cid] = replace(
                current, state="running", started_at=self.now, upstream=self._upstream()
            )
        elif isinstance(action, Stop):
            self.containers[cid] = replace(
                current, state="exited", finished_at=self.now, exit_code=143, upstream=None
            )
            self.stopped_by_planner.add(cid)
        elif isinstance(action, Unpause):
            self.containers[cid] = replace(current, state="running")
        else:
            del self.containers[cid]


@st.composite
def observed_containers(draw: st.DrawFn) -> dict[str, Container]:
    containers: dict[str, Container] = {}
    for i in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["target", "fallback", "older", "stale-token"]))
        state = draw(st.sampled_from(STATES))
        version = {"target": TARGET, "stale-token": TARGET, "fallback": FALLBACK}.get(kind, OLDER)
        if kind == "target":
            token = TOKEN
        elif kind == "stale-token":
            token = TOKEN - 1
        else:
            token = draw(st.sampled_from([TOKEN - 1, TOKEN]))
        ran = draw(st.integers(0, 7200))
        started = None if state == "created" else T0 - s(draw(st.integers(ran, 7200)))
        finished = None
        exit_code = None
        if state in ("exited", "dead"):
            assert started is not None
            finished = started + s(ran)
            exit_code = draw(st.sampled_from([0, 1, 137, 143]))
        cid = f"c{i}"
        name = f"tether-{PROJECT}-v{version}-r{token}"
        if any(c.name == name for c in containers.values()):
            name = f"{name}-{cid}"  # Docker names are unique: a leftover under another name
        containers[cid] = Container(
            id=cid,
            name=name,
            state=state,
            version=version,
            restart_token=token,
            spec_hash=f"spec-v{version}",
            exit_code=exit_code,
            oom_killed=exit_code == 137 and draw(st.booleans()),
            upstream=upstream_of(cid) if state in ("running", "paused", "restarting") else None,
            started_at=started,
            finished_at=finished,
        )
    return containers


@dataclass(frozen=True)
class Scenario:
    desired: Desired
    memory: Memory
    containers: dict[str, Container]
    healthy_after: dict[int, float | None]
    route: Route | None = None
    busy_until: dict[str, datetime | None] = field(default_factory=dict)
    volumes: frozenset[str] = frozenset()  # the Docker volumes that exist at first


MOUNTS: list[tuple[VolumeMount, ...]] = [(), (), (DATA,), (CONFIG,), (DATA, CONFIG)]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    deadline = draw(st.sampled_from([4, 10, 20]))
    interval = draw(st.sampled_from([0.5, 2.0, 5.0]))
    mode = draw(st.sampled_from(["running", "running", "stopped", "deleting"]))
    # None: left to the deployment's volumes
    strategy = draw(st.sampled_from(["start-first", "start-first", "stop-first", None]))
    target = (
        want(
            TARGET,
            deadline=deadline,
            interval=interval,
            strategy=strategy,
            volumes=draw(st.sampled_from(MOUNTS)),
        )
        if draw(st.integers(0, 5))
        else None
    )
    fallback = (
        want(
            FALLBACK,
            token=None,
            deadline=deadline,
            interval=interval,
            volumes=draw(st.sampled_from(MOUNTS)),
        )
        if draw(st.booleans())
        else None
    )
    d = desired(
        target,
        fallback,
        running=mode == "running",
        deleting=mode == "deleting",
        changed_at=T0 - s(draw(st.integers(0, 7200))),
    )
    crash_count = draw(st.integers(0, 12))
    containers = draw(observed_containers())
    memory = Memory(
        crash_count=crash_count,
        last_crash_at=T0 - s(draw(st.integers(0, 7200))) if crash_count else None,
        failed_version=draw(st.sampled_from([None, TARGET])),
        ready_container=draw(st.sampled_from([None, *containers])),
    )
    answers = st.one_of(st.none(), st.floats(0, 2 * deadline))
    healthy_after = {TARGET: draw(answers), FALLBACK: draw(answers), OLDER: draw(answers)}
    upstreams = [c.upstream for c in containers.values() if c.upstream is not None]
    since = T0 - s(draw(st.integers(0, 120)))
    route = draw(
        st.sampled_from(
            [
                None,
                Route("http", HELD, since.timestamp(), PROJECT),
                Route("http", "127.0.0.1:39999", since.timestamp(), PROJECT),  # gone
                *(Route("http", u, since.timestamp(), PROJECT) for u in upstreams),
            ]
        )
    )
    busy = st.one_of(st.none(), st.integers(0, 90).map(lambda n: T0 + s(n)))
    busy_until = {u: draw(busy) for u in upstreams if draw(st.booleans())}
    # "old": a volume no deployment mounts any more, kept
    existing = draw(st.sets(st.sampled_from(["data", "config", "old"])))
    # Docker removes no volume a container (running or not) mounts: the containers of a
    # deployment have its volumes.
    for w in (target, fallback):
        if w is not None and any(c.version == w.version for c in containers.values()):
            existing |= {v.name for v in w.deployment.volumes}
    volumes = frozenset(docker_volume(v) for v in existing)
    return Scenario(d, memory, containers, healthy_after, route, busy_until, volumes)


def run(scenario: Scenario) -> tuple[Decision, DockerModel, Memory, list[Action]]:
    """Plan and apply until the planner rests, stalls or finalizes; check every step."""
    d = scenario.desired
    memory = scenario.memory
    model = DockerModel(
        dict(scenario.containers),
        T0,
        dict(scenario.healthy_after),
        scenario.route,
        dict(scenario.busy_until),
        volumes=set(scenario.volumes),
    )
    actions: list[Action] = []
    for _ in range(MAX_STEPS):
        probed = effective_want(d, memory) if d.running else None
        decision = plan(d, model.observe(d, probed), memory)
        memory = decision.memory
        action = decision.action
        kept = decision.workload
        if (
            decision.reason in ("Crashed", "CrashLoopBackOff")
            and kept is not None
            and kept.id in model.stopped_by_planner
        ):
            event("the planner's own stop counted as a crash")  # the known limitation
        if action is None:
            if decision.requeue_after is None or decision.stalled or never_answers(model, decision):
                event("outcome", decision.phase)
                event("actions", len(actions))
                return decision, model, memory, actions
            assert decision.requeue_after > 0
            model.wait(decision.requeue_after)
            continue
        actions.append(action)
        assert len(actions) <= MAX_ACTIONS, f"no convergence: {actions}"
        check_step(d, memory, model, action)
        if isinstance(action, FailRollout):
            event("rolled back")
            memory = replace(memory, failed_version=action.version)
        elif isinstance(action, Finalize):
            event("outcome", "Finalized")
            event("actions", len(actions))
            return decision, model, memory, actions
        else:
            held = set(model.volumes)
            model.apply(action, d)
            assert held <= model.volumes, f"{action} removed volumes {held - model.volumes}"
    raise AssertionError(f"no rest after {MAX_STEPS} steps: {actions}")


def never_answers(model: DockerModel, decision: Decision) -> bool:
    """The planner polls a container that was Ready and whose endpoint will not answer again."""
    kept = decision.workload
    return (
        decision.reason == "Unhealthy"
        and kept is not None
        and model.healthy_after.get(kept.version) is None
    )


def check_step(d: Desired, memory: Memory, model: DockerModel, action: Action) -> None:
    want = effective_want(d, memory)
    if isinstance(action, Finalize):
        assert d.deleting
        assert not model.containers
    if isinstance(action, FailRollout):
        assert not d.deleting
        assert d.running
        assert d.target is not None
        assert d.fallback is not None
        assert action.version == d.target.version
        assert memory.failed_version != d.target.version
    if isinstance(action, Start) and want is not None and want.deployment.strategy == "stop-first":
        # what cannot run twice never does
        others = [c for c in model.live() if c.id != action.container.id]
        assert not others, f"{action} while {others} run"
    if isinstance(action, Start) and want is not None:
        # a writable volume has one writer at a time, unless its deployment chose start-first
        chose = want.deployment.strategy == "start-first" and "strategy" in (
            want.deployment.model_fields_set
        )
        writable = {
            v.docker_name
            for v in d.volumes_of(want)
            if not next(m for m in want.deployment.volumes if m.name == v.name).read_only
        }
        sharing = [
            c
            for c in model.live()
            if c.id != action.container.id and writable & set(c.mounts) and not chose
        ]
        assert not sharing, f"{action} while {sharing} write to the same volume"
    if isinstance(action, SetRoute) and not action.route.held:
        # a route only ever points at a container that is Ready
        to = [c for c in model.containers.values() if c.upstream == action.route.upstream]
        assert to, f"{action} to no container"
        assert model.healthy(to[0]), f"{action} to what does not answer: {to}"
    if isinstance(action, Stop | Remove):
        # the container the endpoint routes to is never stopped under it
        assert model.routed() != action.container, f"{action} while it serves"
    if d.deleting:
        assert not isinstance(action, Create | Start | FailRollout), f"{action} while deleting"
    if (
        isinstance(action, Stop | Remove)
        and d.running
        and not d.deleting
        and want is not None
        and want.matches(action.container)
        and model.healthy(action.container)
    ):
        spare = [
            c
            for c in model.containers.values()
            if c.id != action.container.id and want.matches(c) and model.healthy(c)
        ]
        assert spare, f"{action} removes the only healthy container of v{want.version}"


@given(scenarios())
@settings(CONVERGING, max_examples=300)
def test_plans_converge_against_a_model_of_docker(scenario: Scenario) -> None:
    decision, model, memory, _ = run(scenario)
    d = scenario.desired
    containers = list(model.containers.values())
    serving = model.routed()
    # What serves keeps serving while the wanted deployment cannot (it is stalled): the one case
    # where a second container runs at rest.
    stalled_beside = decision.stalled and serving is not None and model.healthy(serving)
    assert len(model.live()) <= (2 if stalled_beside else 1), f"live at rest: {containers}"
    if deleted(decision, d, containers):
        return
    want = effective_want(d, memory)
    if decision.reason == "Unhealthy":  # stalled, or a Ready container that stopped answering
        assert d.running
        assert want is not None
        assert decision.workload is not None
        assert want.matches(decision.workload)
        beside = [serving.id] if stalled_beside and serving != decision.workload else []
        assert sorted(c.id for c in model.live()) == sorted([decision.workload.id, *beside])
        return
    if d.running and want is not None:
        for volume in d.volumes_of(want):
            assert volume.docker_name in model.volumes, f"{volume} missing at rest"
        assert decision.ready
        assert len(containers) == 1, containers
        (only,) = containers
        assert want.matches(only)
        assert model.healthy(only)
        assert decision.ready_version == want.version
        assert model.routed() == only, f"{model.route} does not lead to {only}"
    else:
        assert not decision.ready
        assert not model.live()
        assert model.route is None
        assert len(containers) <= 1, containers
        if containers:
            assert want is not None
            assert want.matches(containers[0])


# --- whole sequences through the model ----------------------------------------------------------


def steps(actions: list[Action]) -> list[str]:
    """As the events and the pass's log line name them."""
    return [action.label for action in actions]


def test_a_healthy_rollout_starts_first_switches_the_route_then_retires_the_old_one() -> None:
    old = ctr("old", "running", 1, started=T0 - timedelta(hours=2))
    scenario = Scenario(
        desired(V2, V1), Memory(), {"old": old}, {1: 0.0, 2: 3.0}, route=routed_to(old)
    )
    decision, model, _, actions = run(scenario)
    assert steps(actions) == ["create v2", "start v2", "route v2", "stop v1", "remove v1"]
    assert (decision.ready, decision.ready_version) == (True, 2)
    [new] = model.containers.values()
    assert (new.version, model.routed()) == (2, new)


def test_the_old_one_drains_before_it_stops() -> None:
    old = ctr("old", "running", 1, started=T0 - timedelta(hours=2))
    busy = {old.upstream or "": T0 + s(20)}  # requests in flight until well after the switch
    scenario = Scenario(
        desired(V2, V1), Memory(), {"old": old}, {1: 0.0, 2: 3.0}, routed_to(old), busy
    )
    _, model, _, actions = run(scenario)
    assert steps(actions) == ["create v2", "start v2", "route v2", "stop v1", "remove v1"]
    assert model.now >= T0 + s(20)  # the stop waited for the requests in flight


def test_a_rollout_that_never_gets_healthy_never_touches_the_old_deployment() -> None:
    old = ctr("old", "running", 1, started=T0 - timedelta(hours=2))
    scenario = Scenario(
        desired(V2, V1), Memory(), {"old": old}, {1: 0.0, 2: None}, route=routed_to(old)
    )
    decision, model, memory, actions = run(scenario)
    assert steps(actions) == ["create v2", "start v2", "fail-rollout v2", "stop v2", "remove v2"]
    assert memory.failed_version == 2
    assert (decision.ready, decision.ready_version) == (True, 1)
    assert list(model.containers) == ["old"]
    assert model.routed() == model.containers["old"]
    assert model.now - T0 >= s(DEADLINE_S)  # it waited out the deadline first


def test_a_stop_first_rollout_holds_the_endpoint_while_nothing_runs() -> None:
    old = ctr("old", "running", 1, started=T0 - timedelta(hours=2))
    scenario = Scenario(
        desired(STOP_FIRST_V2, V1), Memory(), {"old": old}, {1: 0.0, 2: 3.0}, routed_to(old)
    )
    decision, _, _, actions = run(scenario)
    assert steps(actions) == ["hold", "stop v1", "create v2", "start v2", "route v2", "remove v1"]
    assert (decision.ready, decision.ready_version) == (True, 2)


def test_a_first_deploy_beside_a_container_from_before_the_proxy_serves_it_meanwhile() -> None:
    old = ctr("old", "running", 1, started=T0 - timedelta(hours=2))
    scenario = Scenario(desired(V2, V1), Memory(), {"old": old}, {1: 0.0, 2: 3.0}, route=None)
    _, model, _, actions = run(scenario)
    assert steps(actions)[:2] == ["route v1", "create v2"]
    assert [c.version for c in model.containers.values()] == [2]


def test_a_rollout_without_fallback_that_never_gets_healthy_stalls() -> None:
    scenario = Scenario(desired(V2), Memory(), {}, {2: None})
    decision, model, _, actions = run(scenario)
    assert steps(actions) == ["create v2", "start v2"]
    assert decision.stalled
    assert [c.state for c in model.containers.values()] == ["running"]


def test_deletion_unpauses_stops_and_removes_everything_then_finalizes() -> None:
    containers = {
        "a": ctr("a", "paused", 2),
        "b": ctr("b", "exited", 1),
        "c": ctr("c", "running", 1, token=0),
    }
    scenario = Scenario(desired(V2, V1, deleting=True), Memory(), containers, {})
    decision, model, _, actions = run(scenario)
    assert steps(actions) == [
        "unpause v2",
        "stop v2",
        "remove v2",
        "remove v1",
        "stop v1",
        "remove v1",
        "finalize",
    ]
    assert decision.action == Finalize()
    assert not model.containers


def summaries(containers: dict[str, Container]) -> list[Summary]:
    """The containers as one `docker ps` lists them: what the resync decides on."""
    return [
        Summary(c.id, PROJECT, c.state, c.version, c.spec_hash, c.restart_token, c.upstream)
        for c in containers.values()
    ]


@given(scenarios())
@settings(PLANNING, max_examples=300)
def test_the_resync_rests_only_where_the_planner_would(scenario: Scenario) -> None:
    """`at_rest` (the resync's shortcut) and `plan` share one idea of what is wanted: a project
    the resync leaves alone is one whose plan has nothing to do and is settled. Before they
    shared `effective_want`, the resync took any recorded failed version as a failed target."""
    d, memory = scenario.desired, scenario.memory
    if not at_rest(d, memory, summaries(scenario.containers), scenario.route):
        return
    want = effective_want(d, memory) if d.running else None
    model = DockerModel(dict(scenario.containers), T0, {}, scenario.route)
    plans_nothing(plan, d, model.observe(d, want), memory, scenario)


def test_a_failed_version_of_another_deployment_is_not_a_failed_target() -> None:
    """The disagreement the shared definition removed: a failure recorded for v1 while v2 is the
    target leaves v2 wanted, so a lone running v1 is not at rest."""
    old = ctr("a", "running", version=1, token=TOKEN)
    d = desired(V2, V1)
    memory = Memory(failed_version=1)
    assert effective_want(d, memory) is V2
    running = replace(old, spec_hash=V1.spec_hash)
    assert not at_rest(d, memory, summaries({"a": running}), routed_to(running))


# --- volumes -------------------------------------------------------------------------------------


def test_a_missing_volume_is_created_before_the_container_that_mounts_it() -> None:
    target = want(2, volumes=(DATA, CONFIG))
    d = desired(target)
    first = decide(d)
    assert first.action == CreateVolume(Volume("config", docker_volume("config")))
    second = decide(d, volumes=("config",))
    assert second.action == CreateVolume(Volume("data", docker_volume("data")))
    assert isinstance(decide(d, volumes=("config", "data")).action, Create)


def test_a_volume_no_deployment_mounts_is_kept_and_changes_nothing() -> None:
    d = desired(want(2))
    running = ctr("a", "running")
    decision = decide(d, running, healthy=("a",), volumes=("old",))
    assert decision.action is None
    assert decision.ready


def test_deletion_finalizes_with_the_volumes_still_there() -> None:
    """Finalize is the reconciler's: whether the volumes go is the deletion's request, not a
    step of the planner."""
    d = desired(want(2, volumes=(DATA,)), deleting=True)
    assert isinstance(decide(d, volumes=("data",)).action, Finalize)


def test_a_writable_volume_makes_the_replacement_stop_first_unless_chosen() -> None:
    assert want(2, strategy=None, volumes=(DATA,)).deployment.strategy == "stop-first"
    assert want(2, strategy=None, volumes=(CONFIG,)).deployment.strategy == "start-first"
    assert want(2, strategy="start-first", volumes=(DATA,)).deployment.strategy == "start-first"
    d = desired(want(2, strategy=None, volumes=(DATA,)), V1)
    old = ctr("old", "running", version=1)
    decision = decide(d, old, healthy=("old",), volumes=("data",))
    assert isinstance(decision.action, SetRoute)
    assert decision.action.route.held
    stopping = decide(d, old, healthy=("old",), route=held(), volumes=("data",))
    assert stopping.action == Stop(old, 10)
