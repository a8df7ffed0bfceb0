"""The engine runtime's planner: from (desired, observed) to the next action. A pure function.

No external calls or any I/O activities are done here. The reconciler observes, calls `plan`,
carries out the one action it returns, observes again and asks again, so that every step is
decided on fresh facts and a lie or a failure in one step is simply seen by the next.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from tether.api.models import EventKind, Phase
from tether.operator import healthgate
from tether.operator.desired import Desired, Memory, Volume, Want, effective_want
from tether.operator.engine.state import LIVE, TRANSITIONAL, Container, Observed, Summary
from tether.operator.routing import (
    HELD,
    RemoveRoute,
    Route,
    SetRoute,
    closing,
    holding,
    mode_of,
    route_to,
)
from tether.operator.runtime import Decision, FailRollout, Finalize

CRASH_DELAY_FIRST_S = 1.0
CRASH_DELAY_CAP_S = 300.0
CRASH_RESET_AFTER = timedelta(minutes=10)
TRANSITION_RECHECK_S = 1.0
DRAIN_RECHECK_S = 0.2


@dataclass(frozen=True)
class Create:
    want: Want
    kind = EventKind.ACTION

    @property
    def label(self) -> str:
        return f"create v{self.want.version}"

    @property
    def key(self) -> Hashable:
        return (Create, self.want)


@dataclass(frozen=True)
class CreateVolume:
    """Create one of the project's named volumes, before a container that mounts it. There is
    no step that removes one: a pass never deletes data (see `tether.operator.engine.erase`)."""

    volume: Volume
    kind = EventKind.ACTION

    @property
    def label(self) -> str:
        return f"create volume {self.volume.name}"

    @property
    def key(self) -> Hashable:
        return (CreateVolume, self.volume)


@dataclass(frozen=True)
class _OnContainer:
    container: Container

    @property
    def kind(self) -> EventKind:
        return EventKind.ACTION

    @property
    def label(self) -> str:
        return f"{type(self).__name__.lower()} v{self.container.version}"

    @property
    def key(self) -> Hashable:
        c = self.container
        return (type(self), c.id, c.state, c.finished_at)


@dataclass(frozen=True)
class Start(_OnContainer):
    pass


@dataclass(frozen=True)
class Stop(_OnContainer):
    grace_s: int
    drained: bool = False  # it served, and has finished what it had in flight (or timed out)

    @property
    def kind(self) -> EventKind:
        return EventKind.DRAINED if self.drained else EventKind.ACTION


@dataclass(frozen=True)
class Unpause(_OnContainer):
    pass


@dataclass(frozen=True)
class Remove(_OnContainer):
    pass


Action = (
    Create
    | CreateVolume
    | Start
    | Stop
    | Unpause
    | Remove
    | SetRoute
    | RemoveRoute
    | Finalize
    | FailRollout
)


def crash_delay(crash_count: int) -> float:
    """The wait before restarting a crashed container: none for a first crash, then 1 s
    doubling up to 5 min."""
    if crash_count <= 1:
        return 0.0
    return min(CRASH_DELAY_FIRST_S * 2.0 ** min(crash_count - 2, 16), CRASH_DELAY_CAP_S)


def plan(desired: Desired, observed: Observed, memory: Memory) -> Decision:
    containers = observed.containers
    moving = [c for c in containers if c.state in TRANSITIONAL]
    if moving:
        return Decision(
            None,
            Phase.WAITING,
            False,
            "DockerTransition",
            f"container {moving[0].name} is {moving[0].state}",
            memory,
            requeue_after=TRANSITION_RECHECK_S,
        )
    want = effective_want(desired, memory)
    if (closed := closing(desired, want, observed.route, memory)) is not None:
        return closed
    if desired.deleting:
        return _plan_deletion(containers, memory, desired)
    if not desired.running or want is None:
        return _plan_stopped(containers, want, memory, desired)
    return _route_only_to_ready(desired, want, observed, memory) or _plan_running(
        desired, want, observed, memory
    )


def _route_only_to_ready(
    desired: Desired, want: Want, observed: Observed, memory: Memory
) -> Decision | None:
    """A route that leads anywhere but to a running container whose endpoint answers is held:
    new connections wait for the next route rather than reach a dead or failing one."""
    route = observed.route
    if route is None or route.held:
        return None
    routed = observed.routed()
    if routed is not None and routed.state == "running" and observed.healthy.get(routed.id):
        return None
    gone = "is gone" if routed is None else f"is {routed.state}, not answering"
    return holding(desired, want, route, gone, observed.now, memory)


def at_rest(
    desired: Desired, memory: Memory, containers: list[Summary], route: Route | None
) -> bool:
    """Whether `plan` would find nothing to do, as far as one `docker ps` and one read of the
    proxy's routes can tell: what the resync decides on, so a project that may not be converged
    gets a full pass. (A property test holds the two to the same answer.)"""
    if desired.deleting:
        return False
    want = effective_want(desired, memory)
    if not desired.running or want is None:
        # Stopped: no route, nothing live, and nothing kept but one stopped container of the
        # wanted spec.
        if route is not None or len(containers) > 1:
            return False
        return all(
            c.state in ("created", "exited") and want is not None and want.matches(c)
            for c in containers
        )
    if len(containers) != 1:
        return False
    [only] = containers
    if only.state != "running" or not want.matches(only):
        return False
    if want.deployment.port is None:
        return route is None
    wanted = Route(mode_of(want.deployment.health), only.upstream or "", 0.0, desired.name)
    return wanted.same_way(route)


def _grace(desired: Desired, container: Container) -> int:
    for want in (desired.target, desired.fallback):
        if want is not None and want.version == container.version:
            return want.deployment.stop_grace_s
    return 10


def _stop_or_unpause(container: Container, desired: Desired) -> Action:
    if container.state == "paused":
        return Unpause(container)
    return Stop(container, _grace(desired, container))


def _live(container: Container) -> bool:
    return container.state in LIVE


def _plan_deletion(containers: tuple[Container, ...], memory: Memory, desired: Desired) -> Decision:
    for container in containers:
        action = _stop_or_unpause(container, desired) if _live(container) else Remove(container)
        return Decision(action, Phase.DELETING, False, "Deleting", "removing containers", memory)
    return Decision(Finalize(), Phase.DELETING, False, "Deleted", "containers removed", memory)


def _plan_stopped(
    containers: tuple[Container, ...], want: Want | None, memory: Memory, desired: Desired
) -> Decision:
    for container in containers:
        if _live(container):
            return Decision(
                _stop_or_unpause(container, desired),
                Phase.STOPPING,
                False,
                "Stopping",
                f"stopping {container.name}",
                memory,
            )
    keep = _best([c for c in containers if want is not None and want.matches(c)])
    for container in containers:
        if container != keep:
            return Decision(
                Remove(container),
                Phase.STOPPING,
                False,
                "Cleanup",
                f"removing {container.name}, which is not the target deployment",
                memory,
            )
    return Decision(
        None, Phase.STOPPED, False, "Stopped", "stopped as desired", memory, workload=keep
    )


def _best(candidates: list[Container], healthy: dict[str, bool] | None = None) -> Container | None:
    """The container to keep among several of the right deployment: the most alive, healthy
    first, then the newest. A dead container is never kept."""
    rank = {"running": 0, "paused": 1, "created": 2, "exited": 3}
    ordered = sorted(
        (c for c in candidates if c.state in rank),
        key=lambda c: (
            rank[c.state],
            not (healthy or {}).get(c.id, False),
            -c.started_at.timestamp() if c.started_at else 0.0,
            c.id,
        ),
    )
    return ordered[0] if ordered else None


def _plan_running(desired: Desired, want: Want, observed: Observed, memory: Memory) -> Decision:
    containers = observed.containers
    keep = _best(
        [c for c in containers if want.matches(c) and c.id not in observed.unstartable],
        observed.healthy,
    )
    others = [c for c in containers if c != keep]
    replacing = desired.target is not None and want is not desired.target

    if want.deployment.strategy == "stop-first" and not (keep and keep.state == "running"):
        # What cannot run twice: everything else stops before the new one starts, with new
        # connections held meanwhile.
        live = [other for other in others if _live(other)]
        if live:
            return _make_way(desired, want, keep, live[0], observed, memory, "stop-first")
    meanwhile = _serve_meanwhile(desired, want, keep, others, observed, memory)
    if meanwhile is not None:
        return meanwhile
    routed = observed.routed()
    keep_answers = keep is not None and bool(observed.healthy.get(keep.id))
    for other in others:
        if _live(other) and other != routed and not keep_answers:  # serves nothing: it can go
            return _retire(desired, want, keep, other, observed, memory, ready=False)
    if keep is None:
        for stale in others:  # a container holding the name the new one needs
            if stale.name == want.name and _live(stale):
                return _make_way(desired, want, None, stale, observed, memory, "it holds the name")
            if stale.name == want.name:
                return _remove_stale(stale, want, memory, observed)
        phase = Phase.ROLLING_BACK if replacing else Phase.CREATING
        for volume in desired.volumes_of(want):
            seen = observed.volume(volume.docker_name)
            if seen is not None and seen.owner != desired.owner:
                return Decision(
                    None,
                    Phase.STALLED,
                    False,
                    "VolumeOfAnotherOwner",
                    f"volume {volume.name} ({volume.docker_name}) was kept from a destroyed "
                    f"project of the same name owned by {seen.owner!r}: it is not mounted for "
                    f"{desired.owner!r}; its owner may re-create the project, or an admin "
                    "removes the volume",
                    memory,
                    stalled=True,
                )
            if seen is None:
                return Decision(
                    CreateVolume(volume),
                    phase,
                    False,
                    "CreatingVolume",
                    f"creating volume {volume.name} ({volume.docker_name}) for v{want.version}",
                    memory,
                )
        return Decision(Create(want), phase, False, phase.value, f"creating {want.name}", memory)
    if keep.state == "paused":
        return Decision(
            Unpause(keep),
            Phase.STARTING,
            False,
            "Paused",
            f"unpausing {keep.name}",
            memory,
            workload=keep,
        )
    if keep.state in ("created", "exited"):
        if _rollout_overdue(desired, want, keep, observed.now, memory):
            return healthgate.rollout_failed(desired, want, memory, _late(want), keep)
        return _plan_start(desired, keep, observed.now, memory)
    return _plan_health(desired, want, keep, others, observed, memory)


def _serve_meanwhile(
    desired: Desired,
    want: Want,
    keep: Container | None,
    others: list[Container],
    observed: Observed,
    memory: Memory,
) -> Decision | None:
    """An endpoint without a route (a first deploy beside a container from before the proxy,
    or a route lost) is routed to a container of an asked-for deployment that answers, while
    the wanted one is not Ready yet."""
    if observed.route is not None or want.deployment.port is None:
        return None
    if keep is not None and observed.healthy.get(keep.id):
        return None  # it will be routed itself
    for other in others:
        if (
            other.state == "running"
            and other.upstream is not None
            and other.version != memory.failed_version
            and observed.healthy.get(other.id)
        ):
            route = route_to(desired, want, other.upstream, observed.now)
            return Decision(
                SetRoute(desired.host_port, route, other.version),
                Phase.REPLACING,
                False,
                "Routing",
                f"routing :{desired.host_port} to {other.name} until v{want.version} is ready",
                memory,
                workload=keep,
            )
    return None


def _make_way(
    desired: Desired,
    want: Want,
    keep: Container | None,
    other: Container,
    observed: Observed,
    memory: Memory,
    why: str,
) -> Decision:
    """Stop `other` before `want` may run, new connections held meanwhile."""
    route = observed.route
    if want.deployment.port is not None and (route is None or not route.held):
        held = route_to(desired, want, HELD, observed.now)
        return Decision(
            SetRoute(desired.host_port, held, None),
            Phase.REPLACING,
            False,
            "Holding",
            f"holding new connections to :{desired.host_port} while {other.name} stops ({why})",
            memory,
            workload=keep,
        )
    in_flight = observed.in_flight.get(other.upstream or "", 0)
    left = (route.since if route else 0.0) + want.deployment.drain_timeout_s
    left -= observed.now.timestamp()
    if in_flight and left > 0:  # what it serves finishes first; new requests wait meanwhile
        return Decision(
            None,
            Phase.REPLACING,
            False,
            "Draining",
            f"{other.name} is draining before it stops: {in_flight} in flight",
            memory,
            requeue_after=min(DRAIN_RECHECK_S, left),
            workload=keep,
        )
    return Decision(
        _stop_or_unpause(other, desired),
        Phase.REPLACING,
        False,
        "Replacing",
        f"stopping {other.name} to make way for v{want.version} ({why})",
        memory,
        workload=keep,
    )


def _remove_stale(stale: Container, want: Want, memory: Memory, observed: Observed) -> Decision:
    if stale.id in observed.unstartable:
        why, message = (
            "Unstartable",
            f"removing {stale.name}: Docker fails every start of it; a fresh container of "
            f"v{want.version} replaces it",
        )
    else:
        why = "Dead" if stale.state == "dead" else "Outdated"
        message = f"removing {stale.name} ({why.lower()}): it holds the name"
    return Decision(Remove(stale), Phase.REPLACING, False, why, message, memory)


def _rollout_overdue(
    desired: Desired, want: Want, keep: Container, now: datetime, memory: Memory
) -> bool:
    """A new target that has not been Ready since the desired change, past its deadline: counted
    from the change, not from the last (re)start, so a crash loop cannot postpone it forever."""
    deadline = timedelta(seconds=want.deployment.ready_deadline_s)
    return (
        want is desired.target
        and desired.fallback is not None
        and desired.fallback.version != want.version
        and keep.id != memory.ready_container
        and now - _trying_since(desired, keep) > deadline
    )


def _trying_since(desired: Desired, keep: Container) -> datetime:
    """Since when `keep` has been given its chance to get Ready: its creation (restarts after
    crashes do not reset it), but never before the desired change it serves."""
    began = keep.created_at or keep.started_at or desired.changed_at
    return max(began, desired.changed_at)


def _plan_start(desired: Desired, keep: Container, now: datetime, memory: Memory) -> Decision:
    # An exit counts as a crash only for a container started under the current desire: one that
    # predates it was stopped by tether itself (a stop, a replacement) or by the change.
    crashed = (
        keep.state == "exited"
        and keep.finished_at is not None
        and keep.finished_at > desired.changed_at
        and keep.started_at is not None
        and keep.started_at >= desired.changed_at
    )
    if not crashed:
        return Decision(
            Start(keep),
            Phase.STARTING,
            False,
            "Starting",
            f"starting {keep.name}",
            memory,
            workload=keep,
        )
    assert keep.finished_at is not None
    if memory.last_crash_at is None or keep.finished_at > memory.last_crash_at:
        ran_for = keep.finished_at - (keep.started_at or keep.finished_at)
        count = 1 if ran_for >= CRASH_RESET_AFTER else memory.crash_count + 1
        memory = replace(
            memory,
            crash_count=count,
            last_crash_at=keep.finished_at,
            last_exit_code=keep.exit_code,
            oom_killed=keep.oom_killed,
        )
    wait = crash_delay(memory.crash_count) - (now - keep.finished_at).total_seconds()
    message = f"{keep.name} exited with code {keep.exit_code}" + (
        " (killed: out of memory)" if keep.oom_killed else ""
    )
    if wait > 0:
        return Decision(
            None,
            Phase.CRASH_LOOP,
            False,
            "CrashLoopBackOff",
            f"{message}; crash {memory.crash_count}, restarting in {wait:.1f} s",
            memory,
            requeue_after=wait,
            workload=keep,
        )
    return Decision(
        Start(keep),
        Phase.STARTING,
        False,
        "Crashed",
        f"{message}; restarting",
        memory,
        workload=keep,
    )


def _plan_ready(
    desired: Desired,
    want: Want,
    keep: Container,
    others: list[Container],
    observed: Observed,
    memory: Memory,
) -> Decision:
    """`keep` answers: route the endpoint to it, let what served before drain, then remove the
    rest."""
    routing = _route_to(desired, want, keep, observed, memory)
    if routing is not None:
        return routing
    memory = replace(memory, ready_container=keep.id)
    for other in others:  # the new deployment is Ready and routed: the old one can go
        return _retire(desired, want, keep, other, observed, memory)
    if keep.started_at and observed.now - keep.started_at >= CRASH_RESET_AFTER:
        memory = replace(memory, crash_count=0)
    return Decision(
        None,
        Phase.RUNNING,
        True,
        "Ready",
        f"v{want.version} is ready",
        memory,
        workload=keep,
        ready_version=want.version,
    )


def _route_to(
    desired: Desired, want: Want, keep: Container, observed: Observed, memory: Memory
) -> Decision | None:
    if want.deployment.port is None or keep.upstream is None:
        return None  # nothing to route to: a deployment without an endpoint
    route = route_to(desired, want, keep.upstream, observed.now)
    if route.same_way(observed.route):
        return None
    before = observed.routed()
    drains = f"; {before.name} drains" if before is not None and before != keep else ""
    return Decision(
        SetRoute(desired.host_port, route, keep.version),
        Phase.RUNNING,
        False,
        "Routing",
        f"routing :{desired.host_port} to {keep.name} ({keep.upstream}){drains}",
        memory,
        workload=keep,
    )


def _retire(
    desired: Desired,
    want: Want,
    keep: Container | None,
    other: Container,
    observed: Observed,
    memory: Memory,
    *,
    ready: bool = True,
) -> Decision:
    """Stop a container the endpoint no longer routes to once it has nothing in flight (or its
    drain time is up), and remove it once stopped. `ready`: `keep` serves meanwhile."""

    def decide(
        step: Action | None, reason: str, message: str, requeue_after: float | None = None
    ) -> Decision:
        return Decision(
            step,
            Phase.RUNNING if ready else Phase.REPLACING,
            ready,
            reason,
            message,
            memory,
            requeue_after=requeue_after,
            workload=keep,
            ready_version=want.version if ready else None,
        )

    if not _live(other):
        return decide(Remove(other), "Ready", f"removing {other.name}, replaced by v{want.version}")
    in_flight = observed.in_flight.get(other.upstream or "", 0)
    route = observed.route
    drain_until = (route.since if route else 0.0) + want.deployment.drain_timeout_s
    left = drain_until - observed.now.timestamp()
    if in_flight and left > 0:
        return decide(
            None,
            "Draining",
            f"{other.name} is draining: {in_flight} in flight, at most {left:.0f} s more",
            requeue_after=min(DRAIN_RECHECK_S, left),
        )
    if other.state == "paused":
        return decide(Unpause(other), "Drained", f"unpausing {other.name} to stop it")
    why = "nothing in flight" if not in_flight else f"{in_flight} still in flight after the drain"
    return decide(
        Stop(other, _grace(desired, other), drained=True),
        "Drained",
        f"stopping {other.name}, replaced by v{want.version} ({why})",
    )


def _plan_health(
    desired: Desired,
    want: Want,
    keep: Container,
    others: list[Container],
    observed: Observed,
    memory: Memory,
) -> Decision:
    if observed.healthy.get(keep.id, False):
        return _plan_ready(desired, want, keep, others, observed, memory)
    waited = (observed.now - _trying_since(desired, keep)).total_seconds()
    deadline = want.deployment.ready_deadline_s
    if keep.id == memory.ready_container:
        # Started again for this desire (a start after a stop): its first answer is awaited as a
        # new container's is, by probes alone.
        restarted = keep.started_at is not None and keep.started_at >= desired.changed_at
        return healthgate.no_longer_answers(
            want, memory, keep, endpoint_pending=restarted and waited < deadline
        )
    if waited < deadline:
        # Paced from the start, not from the desire: in a bulk start, a project's container
        # can start seconds after it was asked for, and is as quick to answer as any other.
        running_for = (observed.now - (keep.started_at or observed.now)).total_seconds()
        return healthgate.awaiting_endpoint(
            want, memory, keep, waited, running_for, endpoint_pending=True
        )
    fallback = desired.fallback
    if want is desired.target and fallback is not None and fallback.version != want.version:
        return healthgate.rollout_failed(desired, want, memory, _late(want), keep)
    return healthgate.never_answered(want, memory, keep, waited)


def _late(want: Want) -> str:
    return f"was not ready within {want.deployment.ready_deadline_s} s"
