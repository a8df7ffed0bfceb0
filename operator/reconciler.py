"""One reconcile pass: read the desired state fresh, observe Docker fresh, plan, act, observe again,
and write what happened as status and events, with exactly one log line for the outcome."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from tether.api.errors import StoreUnavailable
from tether.api.models import (
    Condition,
    ConditionType,
    Deployment,
    DesiredSnapshot,
    EventKind,
    Status,
)
from tether.api.store import Store
from tether.operator.docker import DockerFault, DockerRefused
from tether.operator.health import Prober
from tether.operator.metrics import CONVERGENCE_SECONDS
from tether.operator.planner import (
    Action,
    Create,
    Decision,
    FailRollout,
    Finalize,
    Remove,
    Start,
    Stop,
    Unpause,
    effective_want,
    plan,
    retry_delay,
)
from tether.operator.state import Container, Desired, Memory, Observed, Want, spec_hash

log = structlog.get_logger("tether.reconciler")
MAX_STEPS = 16
# Passes whose start of the same container Docker answered with an error (each pass after the
# driver's three tries) before that container is given up for a fresh one.
FAILED_STARTS_BEFORE_REPLACING = 3
DEFAULT_PROGRESS_DEADLINE_S = 120


class DockerPort(Protocol):
    """What a pass needs from Docker; `tether.operator.docker.DockerDriver` is the real one."""

    async def observe(self, project: str) -> tuple[Container, ...]: ...
    async def inspect(self, container_id: str) -> Container | None: ...
    async def create(
        self, project: str, want: Want, *, host_port: int, publish_address: str
    ) -> None: ...
    async def start(self, container_id: str) -> None: ...
    async def stop(self, container_id: str, grace_s: int) -> None: ...
    async def unpause(self, container_id: str) -> None: ...
    async def remove(self, container_id: str) -> None: ...


class NoProgress(Exception):
    """An action was carried out, yet Docker shows the same state: it lied, or it was undone."""


class LostLease(Exception):
    """Another operator may be active: act no further."""


@dataclass(frozen=True)
class Outcome:
    result: str  # converged | waiting | retrying | stalled | deleted | lost_lease
    requeue_after: float | None = None
    backoff: bool = False


def container_name(installation: str, project: str, version: int, restart_token: int) -> str:
    prefix = "tether-" if installation == "default" else f"tether-{installation}-"
    return f"{prefix}{project}-v{version}-r{restart_token}"


def build_desired(snapshot: DesiredSnapshot, publish_address: str, installation: str) -> Desired:
    project = snapshot.project

    def want(deployment: Deployment, restart_token: int | None) -> Want:
        return Want(
            deployment=deployment,
            spec_hash=spec_hash(deployment, project.host_port, publish_address),
            restart_token=restart_token,
            container_name=container_name(
                installation, project.name, deployment.version, project.restart_token
            ),
        )

    target = want(snapshot.target, project.restart_token) if snapshot.target else None
    running = snapshot.running
    fallback = (
        want(running, None)
        if running is not None and (target is None or running.version != target.version)
        else None
    )
    return Desired(
        name=project.name,
        generation=project.generation,
        running=project.desired_state == "running",
        deleting=project.deletion_requested,
        target=target,
        fallback=fallback,
        changed_at=project.updated_at,
    )


def memory_of(snapshot: DesiredSnapshot) -> Memory:
    status = snapshot.status
    if status is None:
        return Memory()
    same_generation = status.observed_generation == snapshot.project.generation
    return Memory(
        # A new desire (a deploy, a start after a stop) starts without the old crash backoff.
        crash_count=status.crash_count if same_generation else 0,
        last_crash_at=status.last_crash_at,
        failed_version=status.failed_version if same_generation else None,
        ready_container=status.ready_container_id,
    )


def describe(containers: tuple[Container, ...]) -> str:
    return ",".join(f"v{c.version}:{c.state}" for c in containers) or "none"


def _action_name(action: Action) -> str:
    match action:
        case Create(want=want):
            return f"create v{want.version}"
        case Start(container=c) | Stop(container=c) | Unpause(container=c) | Remove(container=c):
            return f"{type(action).__name__.lower()} v{c.version}"
        case FailRollout(version=version):
            return f"fail-rollout v{version}"
        case Finalize():
            return "finalize"
    raise AssertionError(action)


def _action_key(action: Action) -> tuple[object, ...]:
    """Two steps with equal keys did the same thing to the same unchanged container."""
    match action:
        case Start(container=c) | Stop(container=c) | Unpause(container=c) | Remove(container=c):
            return (type(action), c.id, c.state, c.finished_at)
    return (action,)


def _now() -> datetime:
    return datetime.now(UTC)


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


class Reconciler:
    def __init__(
        self,
        store: Store,
        docker: DockerPort,
        prober: Prober,
        *,
        publish_address: str,
        installation: str,
        holds_lease: Callable[[], bool],
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._docker = docker
        self._prober = prober
        self._publish_address = publish_address
        self._installation = installation
        self._holds_lease = holds_lease
        self._rng = rng or random.Random()
        self._failed_starts: dict[str, int] = {}  # container id → passes whose start failed

    async def reconcile(self, name: str) -> Outcome:
        started = time.monotonic()
        bound = log.bind(project=name, pass_id=uuid.uuid4().hex[:12])
        snapshot = await self._store.desired(name)
        if snapshot is None:
            return await self._remove_orphans(name, bound, started)
        desired = build_desired(snapshot, self._publish_address, self._installation)
        previous = snapshot.status
        same_generation = (
            previous is not None and previous.observed_generation == desired.generation
        )
        attempts_before = previous.attempts if previous is not None and same_generation else 0
        memory = replace(memory_of(snapshot), unstartable=self._unstartable())
        events: list[tuple[EventKind, str, str]] = []
        actions: list[str] = []
        observed = ""
        docker_status: int | None = None
        decision: Decision | None = None
        fields = {
            "generation": desired.generation,
            "desired": _describe_desired(desired, memory),
        }
        try:
            last_key: tuple[object, ...] | None = None
            containers: tuple[Container, ...] | None = None
            for _ in range(MAX_STEPS):
                if containers is None:
                    containers = await self._docker.observe(name)
                observed = observed or describe(containers)
                healthy = await self._probe(snapshot, desired, memory, containers)
                decision = plan(desired, Observed(containers, _now(), healthy), memory)
                memory = decision.memory
                action = decision.action
                if action is None:
                    break
                key = _action_key(action)
                if key == last_key:
                    raise NoProgress(
                        f"{_action_name(action)} had no effect: Docker still shows "
                        f"{describe(containers)}"
                    )
                last_key = key
                actions.append(_action_name(action))
                if isinstance(action, FailRollout):
                    memory = replace(memory, failed_version=action.version)
                    events.append((EventKind.HEALTH, "RolloutFailed", decision.message))
                    continue
                if isinstance(action, Finalize):
                    await self._store.finish_deletion(name, desired.generation)
                    bound.info(
                        "pass",
                        **fields,
                        observed=observed,
                        action=actions,
                        result="deleted",
                        docker_status=None,
                        attempt=0,
                        next_delay_s=None,
                        duration_ms=_ms(started),
                    )
                    return Outcome("deleted")
                if not self._holds_lease():
                    raise LostLease("the operator lease was lost; another operator may act")
                try:
                    await self._act(snapshot, action)
                    events.append((EventKind.ACTION, _action_name(action), decision.message))
                    containers = await self._look_again(action, containers)
                except DockerRefused as exc:
                    docker_status = exc.status
                    events.append((EventKind.REFUSED, exc.operation, str(exc)))
                    containers = None
                except DockerFault as exc:
                    self._count_failed_start(action, exc)
                    raise
            else:
                raise NoProgress(f"no convergence after {MAX_STEPS} steps")
        except LostLease:
            bound.warning(
                "pass",
                **fields,
                observed=observed,
                action=actions,
                result="lost_lease",
                docker_status=docker_status,
                attempt=attempts_before,
                next_delay_s=None,
                duration_ms=_ms(started),
            )
            return Outcome("lost_lease")
        except (DockerFault, NoProgress, StoreUnavailable) as exc:
            if isinstance(exc, DockerFault) and exc.status is not None:
                docker_status = exc.status
            return await self._failed(
                snapshot,
                desired,
                memory,
                exc,
                attempts_before,
                events,
                bound.bind(
                    **fields, observed=observed, action=actions, docker_status=docker_status
                ),
                started,
            )
        assert decision is not None
        return await self._succeeded(
            snapshot,
            desired,
            memory,
            decision,
            events,
            bound.bind(**fields, observed=observed, action=actions, docker_status=docker_status),
            started,
        )

    async def _probe(
        self,
        snapshot: DesiredSnapshot,
        desired: Desired,
        memory: Memory,
        containers: tuple[Container, ...],
    ) -> dict[str, bool]:
        want = effective_want(desired, memory) if desired.running else None
        if want is None:
            return {}
        spec = want.deployment
        return {
            c.id: await self._prober.healthy(spec.health, spec.port, snapshot.project.host_port)
            for c in containers
            if c.state == "running" and want.matches(c)
        }

    async def _act(self, snapshot: DesiredSnapshot, action: Action) -> None:
        match action:
            case Create(want=want):
                await self._docker.create(
                    snapshot.project.name,
                    want,
                    host_port=snapshot.project.host_port,
                    publish_address=self._publish_address,
                )
            case Start(container=c):
                await self._docker.start(c.id)
                self._forget_failed_starts(c.id)
            case Stop(container=c, grace_s=grace):
                await self._docker.stop(c.id, grace)
            case Unpause(container=c):
                await self._docker.unpause(c.id)
            case Remove(container=c):
                await self._docker.remove(c.id)
                self._forget_failed_starts(c.id)
            case _:
                raise AssertionError(f"not a Docker action: {action}")

    async def _look_again(
        self, action: Action, containers: tuple[Container, ...]
    ) -> tuple[Container, ...] | None:
        """What the next step decides on: the acted-on container inspected afresh (gone, after a
        removal), the others as they were a step ago (an event from anyone else queues another
        pass). None, for a full look, when there is nothing to look at again."""
        match action:
            case Start(container=acted) | Stop(container=acted) | Unpause(container=acted):
                fresh = await self._docker.inspect(acted.id)
                replaced = (fresh if c.id == acted.id else c for c in containers)
                return tuple(c for c in replaced if c is not None)
            case Remove(container=acted):
                return tuple(c for c in containers if c.id != acted.id)
            case Create(want=want):
                # Docker takes a name where it takes an id: the new container's id is not known.
                created = await self._docker.inspect(want.container_name)
                return (*containers, created) if created is not None else None
        return None

    def _count_failed_start(self, action: Action, fault: DockerFault) -> None:
        """A start Docker answered with an error (after the driver's own retries), as opposed
        to a lost connection or a timeout, which say nothing about the container."""
        if isinstance(action, Start) and fault.status is not None and fault.status < 600:
            container = action.container.id
            self._failed_starts[container] = self._failed_starts.get(container, 0) + 1

    def _forget_failed_starts(self, container_id: str) -> None:
        """It started, or it is gone."""
        self._failed_starts.pop(container_id, None)

    def _unstartable(self) -> frozenset[str]:
        return frozenset(
            container
            for container, failures in self._failed_starts.items()
            if failures >= FAILED_STARTS_BEFORE_REPLACING
        )

    def _endpoint(self, snapshot: DesiredSnapshot) -> str | None:
        target = snapshot.target
        if target is None or target.port is None:
            return None
        return self._prober.endpoint(snapshot.project.host_port)

    async def _succeeded(
        self,
        snapshot: DesiredSnapshot,
        desired: Desired,
        memory: Memory,
        decision: Decision,
        events: list[tuple[EventKind, str, str]],
        bound: structlog.typing.FilteringBoundLogger,
        started: float,
    ) -> Outcome:
        now = _now()
        previous = snapshot.status
        converged = decision.requeue_after is None and not decision.stalled
        progress_deadline = _progress_deadline(snapshot)
        reconciling = _condition(
            ConditionType.RECONCILING,
            not converged,
            decision.reason,
            decision.message,
            desired.generation,
            previous,
            now,
        )
        overdue = not converged and now - _reconciling_since(reconciling, snapshot) > timedelta(
            seconds=progress_deadline
        )
        stalled = decision.stalled or overdue
        container = decision.container
        status = Status(
            project=desired.name,
            observed_generation=desired.generation,
            phase="Stalled" if stalled and not decision.stalled else decision.phase,
            conditions=[
                _condition(
                    ConditionType.READY,
                    decision.ready,
                    decision.reason,
                    decision.message,
                    desired.generation,
                    previous,
                    now,
                ),
                reconciling,
                _condition(
                    ConditionType.STALLED,
                    stalled,
                    decision.reason
                    if decision.stalled
                    else "ProgressDeadlineExceeded"
                    if stalled
                    else "Progressing",
                    decision.message if stalled else "",
                    desired.generation,
                    previous,
                    now,
                ),
            ],
            running_version=decision.ready_version
            or (previous.running_version if previous else None),
            container_id=container.id if container else None,
            ready_container_id=memory.ready_container,
            endpoint=self._endpoint(snapshot),
            attempts=0,
            next_attempt_at=now + timedelta(seconds=decision.requeue_after)
            if decision.requeue_after is not None
            else None,
            last_error=None,
            crash_count=memory.crash_count,
            last_exit_code=container.exit_code
            if container and container.state == "exited"
            else (previous.last_exit_code if previous else None),
            last_crash_at=memory.last_crash_at,
            oom_killed=bool(container and container.oom_killed),
            failed_version=memory.failed_version,
        )
        events.extend(_transitions(previous, status, desired))
        await self._store.write_status(status, events, actor="operator")
        if any(kind == EventKind.CONVERGED for kind, _, _ in events):
            CONVERGENCE_SECONDS.observe((now - snapshot.project.updated_at).total_seconds())
        result = "converged" if converged else "stalled" if stalled else "waiting"
        bound.info(
            "pass",
            result=result,
            attempt=0,
            next_delay_s=decision.requeue_after,
            duration_ms=_ms(started),
        )
        return Outcome(result, decision.requeue_after)

    async def _failed(
        self,
        snapshot: DesiredSnapshot,
        desired: Desired,
        memory: Memory,
        error: Exception,
        attempts_before: int,
        events: list[tuple[EventKind, str, str]],
        bound: structlog.typing.FilteringBoundLogger,
        started: float,
    ) -> Outcome:
        now = _now()
        previous = snapshot.status
        attempts = attempts_before + 1
        delay = retry_delay(attempts, self._rng.uniform(-1.0, 1.0))
        terminal = isinstance(error, DockerFault) and not error.transient
        reason = type(error).__name__
        message = str(error)
        reconciling = _condition(
            ConditionType.RECONCILING, True, reason, message, desired.generation, previous, now
        )
        overdue = now - _reconciling_since(reconciling, snapshot) > timedelta(
            seconds=_progress_deadline(snapshot)
        )
        stalled = terminal or overdue
        ready_before = previous.condition(ConditionType.READY) if previous else None
        status = Status(
            project=desired.name,
            observed_generation=desired.generation,
            phase="Stalled" if stalled else "Retrying",
            conditions=[
                ready_before
                or _condition(
                    ConditionType.READY, False, reason, message, desired.generation, previous, now
                ),
                reconciling,
                _condition(
                    ConditionType.STALLED,
                    stalled,
                    reason if terminal else "ProgressDeadlineExceeded" if stalled else "Retrying",
                    message,
                    desired.generation,
                    previous,
                    now,
                ),
            ],
            running_version=previous.running_version if previous else None,
            container_id=previous.container_id if previous else None,
            ready_container_id=memory.ready_container,
            endpoint=self._endpoint(snapshot),
            attempts=attempts,
            next_attempt_at=now + timedelta(seconds=delay),
            last_error=message,
            crash_count=memory.crash_count,
            last_exit_code=previous.last_exit_code if previous else None,
            last_crash_at=memory.last_crash_at,
            oom_killed=previous.oom_killed if previous else False,
            failed_version=memory.failed_version,
        )
        events.extend(_transitions(previous, status, desired))
        result = "stalled" if stalled else "retrying"
        try:
            await self._store.write_status(status, events, actor="operator")
        except StoreUnavailable as exc:
            message = f"{message}; status not written: {exc}"
        bound.warning(
            "pass",
            result=result,
            error=message,
            attempt=attempts,
            next_delay_s=round(delay, 3),
            duration_ms=_ms(started),
        )
        return Outcome(result, delay, backoff=True)

    async def _remove_orphans(
        self, name: str, bound: structlog.typing.FilteringBoundLogger, started: float
    ) -> Outcome:
        """Containers of a project that no longer exists: stop and remove them."""
        containers = await self._docker.observe(name)
        actions = []
        for container in containers:
            if not self._holds_lease():
                break
            try:
                if container.state in ("running", "paused", "restarting"):
                    await self._docker.stop(container.id, 10)
                await self._docker.remove(container.id)
                self._forget_failed_starts(container.id)
            except DockerRefused:
                continue
            actions.append(f"remove v{container.version}")
        bound.info(
            "pass",
            generation=None,
            desired="absent",
            observed=describe(containers),
            action=actions,
            result="deleted",
            docker_status=None,
            attempt=0,
            next_delay_s=None,
            duration_ms=_ms(started),
        )
        return Outcome("deleted")


def _reconciling_since(reconciling: Condition, snapshot: DesiredSnapshot) -> datetime:
    """Since when this desire has been worked on: a new desired change gets its own progress
    deadline, even while Reconciling stays True across it."""
    return max(reconciling.last_transition_time, snapshot.project.updated_at)


def _progress_deadline(snapshot: DesiredSnapshot) -> int:
    target = snapshot.target
    return target.ready_deadline_s if target else DEFAULT_PROGRESS_DEADLINE_S


def _describe_desired(desired: Desired, memory: Memory) -> str:
    if desired.deleting:
        return "deleted"
    if not desired.running:
        return "stopped"
    want = effective_want(desired, memory)
    return f"running v{want.version}" if want else "running"


def _transitions(
    previous: Status | None, status: Status, desired: Desired
) -> list[tuple[EventKind, str, str]]:
    """The outcome events: converged, or gave up; recorded when they become true."""

    def was(kind: ConditionType) -> str | None:
        before = previous.condition(kind) if previous else None
        if before is None or before.observed_generation != status.observed_generation:
            return None
        return before.status

    events: list[tuple[EventKind, str, str]] = []
    for condition in status.conditions:
        if condition.status != "True" or was(condition.type) == "True":
            continue
        if condition.type == ConditionType.READY:
            events.append((EventKind.CONVERGED, "Ready", condition.message))
        elif condition.type == ConditionType.STALLED:
            events.append((EventKind.GAVE_UP, condition.reason, condition.message))
    reconciling = status.condition(ConditionType.RECONCILING)
    if (
        not desired.running
        and reconciling is not None
        and reconciling.status == "False"
        and was(ConditionType.RECONCILING) != "False"
    ):
        events.append((EventKind.CONVERGED, "Stopped", "stopped as desired"))
    return events


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
