"""From a pass's ending to status: what `tether status` shows after each kind of pass."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from tether.api.models import (
    ConditionType,
    Deployment,
    DesiredSnapshot,
    HttpCheck,
    Phase,
    Project,
    Status,
)
from tether.operator.desired import build_desired, memory_of
from tether.operator.engine.docker.faults import DockerUnavailable, ImageNotFound
from tether.operator.engine.planner import plan
from tether.operator.engine.state import Container, Observed
from tether.operator.status import Failure, build_status

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def snapshot(status: Status | None = None) -> DesiredSnapshot:
    deployment = Deployment(
        project="shop",
        version=1,
        image="workload",
        port=8080,
        health=HttpCheck(type="http", path="/healthz"),
        created_by="alice",
        created_at=NOW - timedelta(hours=1),
    )
    project = Project(
        name="shop",
        owner="alice",
        desired_state="running",
        target_version=1,
        restart_token=0,
        generation=3,
        host_port=20000,
        deletion_requested=False,
        created_at=NOW - timedelta(hours=1),
        updated_at=NOW - timedelta(minutes=5),
    )
    return DesiredSnapshot(project=project, target=deployment, running=None, status=status)


def test_a_crash_restarted_in_the_same_pass_keeps_its_exit_code_in_status() -> None:
    snap = snapshot()
    desired = build_desired(snap, "default")
    assert desired.target is not None
    crashed = Container(
        id="c1",
        name=desired.target.name,
        state="exited",
        version=1,
        restart_token=0,
        spec_hash=desired.target.spec_hash,
        exit_code=137,
        oom_killed=True,
        started_at=NOW - timedelta(minutes=2),
        finished_at=NOW - timedelta(seconds=1),
    )
    restart = plan(desired, Observed((crashed,), NOW), memory_of(snap))
    running = replace(crashed, state="running", exit_code=0, started_at=NOW)
    after = plan(desired, Observed((running,), NOW, {"c1": False}), restart.memory)
    status = build_status(snap, desired, after.memory, after, endpoint=None, now=NOW)
    assert (status.crash_count, status.last_exit_code, status.oom_killed) == (1, 137, True)
    assert status.phase == Phase.STARTING


def test_a_transient_fault_keeps_ready_and_schedules_the_retry() -> None:
    before = build_status(
        snapshot(),
        build_desired(snapshot(), "default"),
        memory_of(snapshot()),
        Failure(DockerUnavailable("list", "no answer"), terminal=False, attempts=1, delay_s=0.5),
        endpoint=None,
        now=NOW,
    )
    assert before.phase == Phase.RETRYING
    assert before.attempts == 1
    assert before.next_attempt_at == NOW + timedelta(seconds=0.5)
    stalled = before.condition(ConditionType.STALLED)
    assert stalled is not None
    assert (stalled.status, stalled.reason) == ("False", "Retrying")


def test_a_terminal_fault_stalls_at_once_with_its_reason() -> None:
    snap = snapshot()
    status = build_status(
        snap,
        build_desired(snap, "default"),
        memory_of(snap),
        Failure(ImageNotFound("create", "no image"), terminal=True, attempts=1, delay_s=0.5),
        endpoint=None,
        now=NOW,
    )
    assert status.phase == Phase.STALLED
    stalled = status.condition(ConditionType.STALLED)
    assert stalled is not None
    assert (stalled.status, stalled.reason) == ("True", "ImageNotFound")
    assert status.last_error == "create: no image"
