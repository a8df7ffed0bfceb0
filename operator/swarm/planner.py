"""The swarm runtime's planner: from (desired, observed) to the next action. A pure function.

No external calls or any I/O activities are done here. Swarm is the scheduler: it places the
project's one service's task on a node, replaces it start-first on an update (rolling back by
itself when the new task fails), and moves it off a node that is down or drained. tether
converges the service's spec to the desired state (one service per project, replicas 1 or 0),
routes the stable endpoint to the task that answers, and holds new connections while none does.

A project with volumes runs where they are: Swarm places its first task (and creates the volumes
on that node); tether then pins the service to that node (a placement constraint, and the node in
a label) and never unpins it. While that node is down, drained or gone the project is Stalled:
Swarm cannot move it, and tether does not either, since elsewhere its volumes would start empty.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace
from datetime import datetime

from tether.api.models import EventKind, Phase
from tether.operator import healthgate
from tether.operator.desired import Desired, Memory, Want, effective_want
from tether.operator.routing import (
    RemoveRoute,
    Route,
    SetRoute,
    closing,
    holding,
    mode_of,
    route_to,
)
from tether.operator.runtime import Decision, FailRollout, Finalize
from tether.operator.swarm.state import (
    UPDATING,
    Node,
    Observed,
    Service,
    ServiceSummary,
    Task,
    alive,
    serves,
)

RECHECK_S = 1.0  # Swarm is moving: look again this soon (its events usually come first)
SWITCH_RECHECK_S = 0.1
PENDING_TOO_LONG_S = 30.0  # a task no node has taken for this long: no node can run it
PENDING_RECHECK_S = 5.0
PAUSED = frozenset({"paused", "rollback_paused"})
FAILED = frozenset({"failed", "rejected"})
ROLLED_BACK = frozenset({"rollback_started", "rollback_paused", "rollback_completed"})


@dataclass(frozen=True)
class CreateService:
    want: Want
    replicas: int
    kind = EventKind.ACTION

    @property
    def label(self) -> str:
        return f"create service v{self.want.version}"

    @property
    def key(self) -> Hashable:
        return (CreateService, self.want, self.replicas)


@dataclass(frozen=True)
class UpdateService:
    """Write `want`'s spec with `replicas` over the service as it was at `service.index`: Swarm
    refuses it if anyone changed the service since (its compare-and-swap)."""

    service: Service
    want: Want
    replicas: int
    node: str = ""  # the node that holds the project's volumes: the one the service is pinned to
    kind = EventKind.ACTION

    @property
    def label(self) -> str:
        if self.node != self.service.volume_node:
            return f"pin v{self.want.version} to its volumes' node"
        if self.want.matches(self.service) and not self.service.edited:
            return f"scale v{self.want.version} to {self.replicas}"
        return f"update service to v{self.want.version}"

    @property
    def key(self) -> Hashable:
        s = self.service
        return (UpdateService, s.id, s.index, self.want, self.replicas, self.node)


@dataclass(frozen=True)
class RemoveService:
    service: Service
    kind = EventKind.ACTION

    @property
    def label(self) -> str:
        return f"remove service v{self.service.version}"

    @property
    def key(self) -> Hashable:
        return (RemoveService, self.service.id, self.service.index)


Action = (
    CreateService | UpdateService | RemoveService | SetRoute | RemoveRoute | Finalize | FailRollout
)


def plan(desired: Desired, observed: Observed, memory: Memory) -> Decision:
    want = effective_want(desired, memory)
    if (closed := closing(desired, want, observed.route, memory)) is not None:
        return closed
    if desired.deleting:
        for service in observed.services:
            return Decision(
                RemoveService(service),
                Phase.DELETING,
                False,
                "Deleting",
                f"removing service {service.name}",
                memory,
            )
        return Decision(Finalize(), Phase.DELETING, False, "Deleted", "service removed", memory)
    keep = _keep(want, observed)
    if not desired.running or want is None:
        return _plan_stopped(desired, want, keep, observed, memory)
    return _route_only_to_ready(desired, want, observed, memory) or _plan_running(
        desired, want, keep, observed, memory
    )


def _keep(want: Want | None, observed: Observed) -> Service | None:
    """The project's one service, among several (made outside tether, or by a lost answer): the
    one the endpoint routes to, else one of the wanted spec, else the longest-standing."""
    routed = observed.routed()
    ranked = sorted(
        observed.services,
        key=lambda s: (
            routed is None or routed.service_id != s.id,
            want is None or not want.matches(s),
            s.id,
        ),
    )
    return ranked[0] if ranked else None


def _route_only_to_ready(
    desired: Desired, want: Want, observed: Observed, memory: Memory
) -> Decision | None:
    """A route that leads anywhere but to a task that runs on a node that is up and answers is
    held: new connections wait for the next route rather than reach a dead node."""
    route = observed.route
    if route is None or route.held:
        return None
    routed = observed.routed()
    if routed is not None and observed.serves(routed) and observed.healthy.get(routed.id):
        return None
    if routed is None:
        gone = "is gone"
    else:
        node = observed.nodes.get(routed.node_id)
        where = f" on {node.hostname} ({node.state})" if node is not None else ""
        gone = f"is {routed.state}{where}, not answering"
    return holding(desired, want, route, gone, observed.now, memory)


def _plan_stopped(
    desired: Desired,
    want: Want | None,
    keep: Service | None,
    observed: Observed,
    memory: Memory,
) -> Decision:
    for service in observed.services:
        if service != keep or want is None:
            return Decision(
                RemoveService(service),
                Phase.STOPPING,
                False,
                "Cleanup",
                f"removing service {service.name}, which is not the project's",
                memory,
            )
    if keep is not None and want is not None and keep.replicas != 0:
        return Decision(
            UpdateService(keep, want, 0, _pin(desired, keep, observed)),
            Phase.STOPPING,
            False,
            "Stopping",
            f"scaling {keep.name} to 0",
            memory,
        )
    left = [t for t in observed.tasks if alive(t, observed.nodes)]
    if left:
        return Decision(
            None,
            Phase.STOPPING,
            False,
            "Stopping",
            f"waiting for {len(left)} task(s) to stop",
            memory,
            requeue_after=RECHECK_S,
        )
    return Decision(None, Phase.STOPPED, False, "Stopped", "stopped as desired", memory)


def _plan_running(
    desired: Desired, want: Want, keep: Service | None, observed: Observed, memory: Memory
) -> Decision:
    replacing = desired.target is not None and want is not desired.target
    if keep is None:
        phase = Phase.ROLLING_BACK if replacing else Phase.CREATING
        return Decision(
            CreateService(want, 1), phase, False, phase.value, f"creating v{want.version}", memory
        )
    for other in observed.services:  # never the routed one: that is the one kept
        if other != keep:
            return Decision(
                RemoveService(other),
                Phase.REPLACING,
                False,
                "Cleanup",
                f"removing service {other.name}: the project has one, {keep.name}",
                memory,
            )
    # Swarm rolled this very spec back (its task failed, or never got healthy): writing it again
    # would only start the same failure over.
    rolled_back = (
        keep.update_state in ROLLED_BACK
        and keep.previous is not None
        and want.matches(keep.previous)
        and not want.matches(keep)
    )
    fallback = desired.fallback
    may_fail = want is desired.target and fallback is not None and fallback.version != want.version
    if rolled_back and may_fail:
        return healthgate.rollout_failed(
            desired,
            want,
            memory,
            f"did not get Ready (Swarm rolled it back: {keep.update_message})",
        )
    if rolled_back:
        return Decision(
            None,
            Phase.UNHEALTHY,
            False,
            "RolledBack",
            f"Swarm rolled v{want.version} back ({keep.update_message or 'its task failed'}); "
            "tether does not write it again: deploy a fix",
            memory,
            stalled=True,
        )
    if not want.matches(keep) or keep.edited or keep.replicas != 1:
        return _update(desired, want, keep, observed, memory)
    if not keep.volume_node and (holder := _volumes_placed(desired, keep, observed)) is not None:
        return Decision(
            UpdateService(keep, _with_token(want, keep, observed), 1, holder.id),
            Phase.STARTING,
            False,
            "PinVolumes",
            f"pinning {keep.name} to {holder.hostname}, where its task created its volumes",
            memory,
        )
    return _plan_tasks(desired, want, keep, observed, memory)


def _volumes_placed(desired: Desired, keep: Service, observed: Observed) -> Node | None:
    """The node the first task that mounted the project's volumes was placed on (whatever became
    of it: Swarm created them there the moment it was), so there they stay."""
    mounting = [
        w for w in (desired.target, desired.fallback) if w is not None and desired.volumes_of(w)
    ]
    placed = [
        t
        for t in observed.tasks
        if t.service_id == keep.id
        and t.node_id
        # Of any restart token: a restart changes no mount.
        and any((t.version, t.spec_hash) == (w.version, w.spec_hash) for w in mounting)
    ]
    first = min(placed, key=lambda t: (t.created_at or t.since, t.id), default=None)
    return observed.nodes.get(first.node_id) if first is not None else None


def _pin(desired: Desired, keep: Service, observed: Observed) -> str:
    """The node a spec written over `keep` pins the service to: the one it is pinned to, else
    the one its volumes were created on, if they were."""
    if keep.volume_node:
        return keep.volume_node
    holder = _volumes_placed(desired, keep, observed)
    return holder.id if holder is not None else ""


def _volume_node_lost(keep: Service, observed: Observed) -> str | None:
    """Why the node that holds the project's volumes cannot run it (None: it can, or there is
    no such node)."""
    if not keep.volume_node:
        return None
    node = observed.nodes.get(keep.volume_node)
    if node is None:
        return f"node {keep.volume_node}, which is no longer in the swarm"
    if not node.up:
        return f"{node.hostname}, which is {node.state}"
    if node.availability != "active":
        return f"{node.hostname}, which is {node.availability}ed"
    return None


def _update(
    desired: Desired, want: Want, keep: Service, observed: Observed, memory: Memory
) -> Decision:
    if keep.update_state == "rollback_started":
        return Decision(
            None,
            Phase.WAITING,
            False,
            "SwarmRollingBack",
            f"Swarm is rolling {keep.name} back; the spec is written once it is done",
            memory,
            requeue_after=RECHECK_S,
        )
    if want.matches(keep) and not keep.edited:
        reason, phase = "Starting", Phase.STARTING
        message = f"scaling {keep.name} to 1 (it asked for {keep.replicas})"
    elif want.matches(keep):
        reason, phase = "Drift", Phase.REPLACING
        message = f"{keep.name} was edited outside tether: writing v{want.version}'s spec back"
    else:
        reason = "RollingBack" if want is not desired.target else "Updating"
        phase = Phase.ROLLING_BACK if want is not desired.target else Phase.REPLACING
        message = f"updating {keep.name} from v{keep.version} to v{want.version} (start-first)"
    return Decision(
        UpdateService(keep, _with_token(want, keep, observed), 1, _pin(desired, keep, observed)),
        phase,
        False,
        reason,
        message,
        memory,
    )


def _with_token(want: Want, keep: Service, observed: Observed) -> Want:
    """A fallback matches any restart token; written back, it takes the one its tasks ran with,
    so that Swarm finds the task that still serves it unchanged and leaves it running."""
    if want.restart_token is not None:
        return want
    tokens = [t.restart_token for t in observed.tasks if want.matches(t) and observed.serves(t)]
    if keep.previous is not None and want.matches(keep.previous):
        tokens.append(keep.previous.restart_token)
    return replace(want, restart_token=tokens[0] if tokens else keep.restart_token)


def _created(task: Task) -> datetime:
    return task.created_at or task.since


def _newest(tasks: list[Task]) -> Task | None:
    return max(tasks, key=lambda t: (_created(t), t.id), default=None)


def _plan_tasks(
    desired: Desired, want: Want, keep: Service, observed: Observed, memory: Memory
) -> Decision:
    mine = [t for t in observed.tasks if t.service_id == keep.id and want.matches(t)]
    answering = [t for t in mine if observed.serves(t) and observed.healthy.get(t.id)]
    routed = observed.routed()
    ready = routed if routed in answering else _newest(answering)
    if ready is not None:
        return _plan_ready(desired, want, keep, ready, observed, memory)
    newest = _newest([t for t in mine if t.desired_state == "running"])
    if (lost := _volume_node_lost(keep, observed)) is not None:
        return Decision(
            None,
            Phase.STALLED,
            False,
            "VolumeNodeLost",
            f"the project's volumes ({', '.join(v.name for v in desired.volumes) or 'none now'}) "
            f"and their data are on {lost}: it runs again once that node is back, and nowhere else "
            "(elsewhere its volumes would start empty)",
            memory,
            requeue_after=PENDING_RECHECK_S,
            stalled=True,
            workload=newest,
        )
    since = max(desired.changed_at, keep.updated_at or desired.changed_at)
    waited = (observed.now - since).total_seconds()
    deadline = want.deployment.ready_deadline_s
    fallback = desired.fallback
    may_fail = want is desired.target and fallback is not None and fallback.version != want.version
    if keep.update_state in PAUSED:
        return Decision(
            None,
            Phase.STALLED,
            False,
            "UpdatePaused",
            f"Swarm paused the update of {keep.name}: {keep.update_message}",
            memory,
            requeue_after=PENDING_RECHECK_S,
            stalled=True,
            workload=newest,
        )
    was_ready = newest is not None and newest.id == memory.ready_container
    if waited > deadline and may_fail and not was_ready:
        return healthgate.rollout_failed(
            desired, want, memory, f"did not get Ready (not Ready within {deadline} s)"
        )
    failed = _newest([t for t in mine if t.error and t.state in FAILED])
    if newest is not None and newest.state == "pending":
        pending_s = (observed.now - newest.since).total_seconds()
        why = newest.error or newest.message or "no node can run it"
        too_long = pending_s > PENDING_TOO_LONG_S
        return Decision(
            None,
            Phase.WAITING,
            False,
            "Unschedulable" if too_long else "TaskPending",
            f"v{want.version}'s task has been pending for {pending_s:.0f} s: {why}",
            memory,
            requeue_after=PENDING_RECHECK_S if too_long else RECHECK_S,
            stalled=too_long,
            workload=newest,
        )
    if failed is not None and (newest is None or newest.state != "running"):
        return Decision(
            None,
            Phase.CRASH_LOOP,
            False,
            "TaskFailed",
            f"v{want.version}'s task {failed.state}: {failed.error}; Swarm starts another",
            memory,
            requeue_after=RECHECK_S,
            workload=newest or failed,
        )
    if newest is None or newest.state != "running" or not observed.serves(newest):
        node = observed.nodes.get(newest.node_id) if newest is not None else None
        if newest is None:
            what = "no task yet"
        elif node is not None and not node.up:
            what = f"its task is {newest.state} on {node.hostname}, which is {node.state}"
        else:
            what = f"its task is {newest.state}"
        # While an older task serves, Swarm stops it the moment the new one runs: look often,
        # so that the route moves before the old task is gone.
        other = observed.routed()
        soon = other is not None and (newest is None or other.id != newest.id)
        return Decision(
            None,
            Phase.STARTING,
            False,
            "Starting",
            f"waiting for v{want.version} to run ({what})",
            memory,
            requeue_after=SWITCH_RECHECK_S if soon else RECHECK_S,
            workload=newest,
        )
    if was_ready:
        return healthgate.no_longer_answers(want, memory, newest)
    # The task Swarm started afresh because the one that was Ready moved (its node was lost or
    # drained, not a crash) has its own chance to answer, counted from when it was created; the
    # tasks a crash loop starts after it do not, else each crash would start the deadline over.
    began = since
    moved = [
        t
        for t in mine
        if t.id == memory.ready_container and t.state not in FAILED and _node_gone(t, observed)
    ]
    if moved:
        after = [t for t in mine if t.id != moved[0].id and _created(t) >= _created(moved[0])]
        if after:
            began = max(since, min(_created(t) for t in after))
    task_s = (observed.now - began).total_seconds()
    if task_s <= deadline:
        running_s = (observed.now - newest.since).total_seconds()
        return healthgate.awaiting_endpoint(want, memory, newest, waited, running_s)
    return healthgate.never_answered(want, memory, newest, task_s)


def _node_gone(task: Task, observed: Observed) -> bool:
    """Its node is down, unknown, or drained: Swarm moves its task elsewhere."""
    node = observed.nodes.get(task.node_id)
    return node is None or not node.up or node.availability == "drain"


def _plan_ready(
    desired: Desired,
    want: Want,
    keep: Service,
    ready: Task,
    observed: Observed,
    memory: Memory,
) -> Decision:
    """`ready` answers: route the endpoint to it."""
    if want.deployment.port is not None and ready.upstream is not None:
        route = route_to(desired, want, ready.upstream, observed.now)
        if not route.same_way(observed.route):
            node = observed.nodes.get(ready.node_id)
            on = f" on {node.hostname}" if node is not None else ""
            return Decision(
                SetRoute(desired.host_port, route, want.version),
                Phase.RUNNING,
                False,
                "Routing",
                f"routing :{desired.host_port} to v{want.version}'s task{on} ({ready.upstream})",
                memory,
                workload=ready,
            )
    memory = replace(memory, ready_container=ready.id)
    # Ready, and converged: what Swarm still does (retiring the task it replaced, watching the
    # new one for its monitor window) needs nothing of tether; the service's events, and the
    # resync, bring another pass should its update yet fail.
    finishing = keep.update_state in UPDATING
    return Decision(
        None,
        Phase.RUNNING,
        True,
        "Ready",
        f"v{want.version} is ready" + (" (Swarm is finishing its update)" if finishing else ""),
        memory,
        workload=ready,
        ready_version=want.version,
    )


def at_rest(
    desired: Desired,
    memory: Memory,
    services: list[ServiceSummary],
    nodes: dict[str, Node],
    route: Route | None,
) -> bool:
    """Whether `plan` would find nothing to do, as far as one service list, one task list, one
    node list and one read of the proxy's routes can tell: what the resync decides on, so a
    project that may not be converged gets a full pass."""
    if desired.deleting:
        return False
    want = effective_want(desired, memory)
    if not desired.running or want is None:
        if route is not None or len(services) > 1 or (services and want is None):
            return False
        return all(
            s.service.replicas == 0 and not any(alive(t, nodes) for t in s.tasks) for s in services
        )
    if len(services) != 1:
        return False
    [only] = services
    service = only.service
    if (
        not want.matches(service)
        or (desired.volumes_of(want) and not service.volume_node)
        or service.edited
        or service.replicas != 1
        or service.update_state in UPDATING | PAUSED
    ):
        return False
    running = [t for t in only.tasks if want.matches(t) and serves(t, nodes)]
    if len(running) != 1:
        return False
    if want.deployment.port is None:
        return route is None
    wanted = Route(mode_of(want.deployment.health), running[0].upstream or "", 0.0, desired.name)
    return wanted.same_way(route)
