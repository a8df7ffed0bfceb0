"""From a pass's ending to the `Status` the operator writes, and the outcome events it implies.

No external calls or any I/O activities are done here: one function, `build_status`, turns what a
pass ended with (its planner's decision, or the fault that stopped it) into status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from tether.api.models import (
    Condition,
    ConditionType,
    DesiredSnapshot,
    EventKind,
    NewEvent,
    Phase,
    Status,
)
from tether.operator.desired import Desired, Memory
from tether.operator.runtime import Decision

DEFAULT_PROGRESS_DEADLINE_S = 120


@dataclass(frozen=True)
class Failure:
    """A pass stopped by a fault: retried after `delay_s`, unless it is `terminal`."""

    error: Exception
    terminal: bool
    attempts: int
    delay_s: float

    @property
    def reason(self) -> str:
        return type(self.error).__name__

    @property
    def message(self) -> str:
        return str(self.error)


@dataclass(frozen=True)
class _Report:
    """What the two kinds of ending say, in the terms status is built from."""

    phase: Phase
    ready: bool | None  # None: Ready stays as the last pass that got that far found it
    converged: bool
    reason: str
    message: str
    own_stall: bool  # the planner, or a terminal fault, says no retry can help
    not_stalled_reason: str
    clear_message: str  # the Stalled condition's message while it is False
    requeue_after: float | None


def _report(ending: Decision | Failure) -> _Report:
    if isinstance(ending, Failure):
        return _Report(
            phase=Phase.RETRYING,
            ready=None,
            converged=False,
            reason=ending.reason,
            message=ending.message,
            own_stall=ending.terminal,
            not_stalled_reason="Retrying",
            clear_message=ending.message,
            requeue_after=ending.delay_s,
        )
    return _Report(
        phase=ending.phase,
        ready=ending.ready,
        converged=ending.requeue_after is None and not ending.stalled,
        reason=ending.reason,
        message=ending.message,
        own_stall=ending.stalled,
        not_stalled_reason="Progressing",
        clear_message="",
        requeue_after=ending.requeue_after,
    )


def build_status(
    snapshot: DesiredSnapshot,
    desired: Desired,
    memory: Memory,
    ending: Decision | Failure,
    *,
    endpoint: str | None,
    now: datetime,
) -> Status:
    previous = snapshot.status
    report = _report(ending)

    def condition(kind: ConditionType, value: bool, reason: str, message: str) -> Condition:
        return _condition(kind, value, reason, message, desired.generation, previous, now)

    reconciling = condition(
        ConditionType.RECONCILING, not report.converged, report.reason, report.message
    )
    overdue = not report.converged and now - _reconciling_since(reconciling, snapshot) > timedelta(
        seconds=_progress_deadline(snapshot)
    )
    stalled = report.own_stall or overdue
    kept_ready = previous.condition(ConditionType.READY) if previous else None
    if report.ready is None and kept_ready is not None:
        ready = kept_ready
    else:
        ready = condition(ConditionType.READY, bool(report.ready), report.reason, report.message)
    stalled_reason = (
        report.reason
        if report.own_stall
        else "ProgressDeadlineExceeded"
        if stalled
        else report.not_stalled_reason
    )
    stalled_condition = condition(
        ConditionType.STALLED,
        stalled,
        stalled_reason,
        report.message if stalled else report.clear_message,
    )
    phase = report.phase
    if stalled and (isinstance(ending, Failure) or not report.own_stall):
        phase = Phase.STALLED
    return Status(
        project=desired.name,
        observed_generation=desired.generation,
        phase=phase,
        conditions=[ready, reconciling, stalled_condition],
        ready_container_id=memory.ready_container,
        endpoint=endpoint,
        next_attempt_at=now + timedelta(seconds=report.requeue_after)
        if report.requeue_after is not None
        else None,
        crash_count=memory.crash_count,
        last_crash_at=memory.last_crash_at,
        failed_version=memory.failed_version,
        **_workload_fields(ending, memory, previous or Status(project=desired.name)),
    )


def _workload_fields(
    ending: Decision | Failure, memory: Memory, before: Status
) -> dict[str, object]:
    """What status says of the project's container: as the planner found it, or, when a fault
    stopped the pass before it could look, as the last pass (`before`) found it. How it last
    exited: as it shows now if it has exited, else as the last crash ended (`memory`)."""
    if isinstance(ending, Failure):
        return {
            "running_version": before.running_version,
            "container_id": before.container_id,
            "attempts": ending.attempts,
            "last_error": ending.message,
            "last_exit_code": memory.last_exit_code,
            "oom_killed": memory.oom_killed,
            "route": before.route,
            "serving_version": before.serving_version,
            "serving_container_id": before.serving_container_id,
            "node": before.node,
        }
    workload = ending.workload
    exited = workload is not None and workload.exited
    return {
        "running_version": ending.ready_version or before.running_version,
        "container_id": workload.id if workload else None,
        "attempts": 0,
        "last_error": None,
        "last_exit_code": workload.exit_code if workload and exited else memory.last_exit_code,
        "oom_killed": workload.oom_killed if workload and exited else memory.oom_killed,
        "route": ending.route,
        "serving_version": ending.serving.version if ending.serving else None,
        "serving_container_id": ending.serving.id if ending.serving else None,
        "node": ending.node,
    }


def _condition(
    kind: ConditionType,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    previous: Status | None,
    now: datetime,
) -> Condition:
    value = "True" if status else "False"
    before = previous.condition(kind) if previous else None
    since = before.last_transition_time if before and before.status == value else now
    return Condition(
        type=kind,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def _reconciling_since(reconciling: Condition, snapshot: DesiredSnapshot) -> datetime:
    """Since when this desire has been worked on: a new desired change gets its own progress
    deadline, even while Reconciling stays True across it."""
    return max(reconciling.last_transition_time, snapshot.project.updated_at)


def _progress_deadline(snapshot: DesiredSnapshot) -> int:
    target = snapshot.target
    return target.ready_deadline_s if target else DEFAULT_PROGRESS_DEADLINE_S


def transitions(previous: Status | None, status: Status, desired: Desired) -> list[NewEvent]:
    """The outcome events: converged, or gave up; recorded when they become true."""

    def was(kind: ConditionType) -> str | None:
        before = previous.condition(kind) if previous else None
        if before is None or before.observed_generation != status.observed_generation:
            return None
        return before.status

    events: list[NewEvent] = []
    for condition in status.conditions:
        if condition.status != "True" or was(condition.type) == "True":
            continue
        if condition.type == ConditionType.READY:
            events.append(NewEvent(EventKind.CONVERGED, "Ready", condition.message))
        elif condition.type == ConditionType.STALLED:
            events.append(NewEvent(EventKind.GAVE_UP, condition.reason, condition.message))
    reconciling = status.condition(ConditionType.RECONCILING)
    before = previous.condition(ConditionType.RECONCILING) if previous else None
    if (
        reconciling is not None
        and reconciling.reason == "Draining"
        and (before is None or before.reason != "Draining")
    ):
        events.append(NewEvent(EventKind.DRAINING, "Draining", reconciling.message))
    if (
        not desired.running
        and reconciling is not None
        and reconciling.status == "False"
        and was(ConditionType.RECONCILING) != "False"
    ):
        events.append(NewEvent(EventKind.CONVERGED, "Stopped", "stopped as desired"))
    return events


def outside_changes(
    previous: Status | None, status: Status, actions: Sequence[str], observed: str | None
) -> list[NewEvent]:
    """What happened to a project on its own, found by a pass: its container crashed (each new
    crash, with its count, exit code and OOM kill), or it was at rest and this pass found it
    changed (a container removed or stopped from outside, a route lost, an endpoint that stopped
    answering), told by the pass that finds it and starts the repair; the `converged` that
    follows says the repair is done."""
    crashed_before = previous.last_crash_at if previous is not None else None
    if status.last_crash_at is not None and status.last_crash_at != crashed_before:
        how = f"exited with code {status.last_exit_code}"
        if status.oom_killed:
            how += " (killed: out of memory)"
        message = f"crash {status.crash_count}: the container {how}"
        return [NewEvent(EventKind.HEALTH, "Crashed", message)]
    generation = status.observed_generation
    if previous is None or not _at_rest(previous, generation):
        return []
    if actions or not _at_rest(status, generation):
        did = f"did {', '.join(actions)}" if actions else "repairing"
        message = f"converged, then changed outside tether: found {observed or 'it changed'}; {did}"
        return [NewEvent(EventKind.ACTION, "DriftRepaired", message)]
    return []


def _at_rest(previous: Status, generation: int) -> bool:
    ready = previous.condition(ConditionType.READY)
    reconciling = previous.condition(ConditionType.RECONCILING)
    return (
        previous.observed_generation == generation
        and ready is not None
        and ready.status == "True"
        and reconciling is not None
        and reconciling.status == "False"
    )
