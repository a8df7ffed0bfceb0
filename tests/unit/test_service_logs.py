"""Which lines `tether logs` shows under the swarm runtime (`Shown`, pure), and how a line of a
service's stream reads (`service_line`). tests/swarm/test_swarm_logs.py runs it on a real Swarm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tether.operator.swarm.docker.logs import Shown, service_line
from tether.operator.swarm.state import Task

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def task(id: str, created_s: float, state: str = "running", desired: str = "running") -> Task:
    return Task(
        id=id,
        service_id="svc",
        node_id="node",
        state=state,
        desired_state=desired,
        version=1,
        spec_hash="h",
        restart_token=0,
        since=T0,
        created_at=T0 + timedelta(seconds=created_s),
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_line_names_its_task_time_and_text() -> None:
    raw = (
        b"2026-12-03T07:59:10.418051121Z com.docker.swarm.node.id=n1,"
        b"com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t%2F1 hello, world  x"
    )
    assert service_line(raw) == (
        "t/1",
        datetime(2026, 12, 3, 7, 59, 10, 418051, tzinfo=UTC),
        "hello, world  x",
    )
    # Docker writes the details even when there are none: an empty field before the text.
    task_id, _, text = service_line(b"2026-12-03T07:59:10.418051121Z  no task")
    assert (task_id, text) == ("", "no task")


def test_the_current_task_is_the_running_one_and_only_older_tasks_are_left_out() -> None:
    shown = Shown(began=at(100))
    old = task("old", 0, state="shutdown", desired="shutdown")
    current = task("current", 10)
    starting = task("starting", 20, state="starting")  # a start-first replacement on its way
    assert shown.start([starting, old, current]) == current
    assert shown.older == {"old"}
    assert not shown.wants("old", at(1), follow=True)
    assert shown.wants("current", at(11), follow=False)
    assert not shown.wants("starting", at(21), follow=False)  # not following: the current only
    assert shown.wants("starting", at(21), follow=True)  # following: each newer task


def test_without_a_running_task_the_newest_is_current() -> None:
    shown = Shown(began=at(100))
    done = [task(f"t{i}", i, state="shutdown", desired="shutdown") for i in range(3)]
    assert shown.start(done) == done[2]
    assert shown.older == {"t0", "t1"}
    assert Shown(began=at(100)).start([]) is None


def test_a_line_is_shown_once_and_a_follow_reads_again_from_the_earliest_last_line() -> None:
    shown = Shown(began=at(100))
    shown.start([task("a", 0), task("b", 5, state="starting")])
    assert shown.resume_since(None) == at(100)  # nothing shown yet: not the whole history
    assert shown.resume_since(at(200)) == at(200)  # nor before what the person asked for
    shown.until.update({"a": at(150), "b": at(140)})
    assert not shown.wants("a", at(150), follow=True)
    assert shown.wants("a", at(150.5), follow=True)
    assert shown.resume_since(None) == at(140)  # b's later lines are not lost to a's
