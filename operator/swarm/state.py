"""What the swarm runtime sees of a project: its service, the service's tasks, and the nodes they
run on, as the Swarm manager shows them.

No external calls or any I/O activities are done here: plain values, built by the swarm driver,
read by the swarm planner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from tether.operator.routing import Route

UpdateState = Literal[
    "updating", "paused", "completed", "rollback_started", "rollback_paused", "rollback_completed"
]
# Swarm is replacing tasks: its own update (or its rollback) is under way.
UPDATING: frozenset[str] = frozenset({"updating", "rollback_started"})
# A task on its way to running: not placed yet, or placed and starting.
ON_THE_WAY: frozenset[str] = frozenset(
    {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
)
# A task whose container is gone (or never was): it serves nothing.
ENDED: frozenset[str] = frozenset(
    {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}
)


@dataclass(frozen=True)
class Labels:
    """The desire a spec was written for, as tether's labels tell it."""

    version: int
    spec_hash: str
    restart_token: int


@dataclass(frozen=True)
class Node:
    id: str
    hostname: str
    address: str  # where its host-mode ports answer
    state: str  # Swarm's node state: ready, down, unknown, disconnected
    availability: str  # active, pause, drain
    role: str  # manager, worker

    @property
    def up(self) -> bool:
        return self.state == "ready"


@dataclass(frozen=True)
class Service:
    """A project's Swarm service: the spec tether wrote (its labels), how many replicas it asks
    for, and how far Swarm has got in applying it."""

    id: str
    name: str
    index: int  # Swarm's `Version.Index`: an update must name it (compare-and-swap)
    version: int
    spec_hash: str
    restart_token: int
    replicas: int
    edited: bool = False  # its task template is not what tether wrote: changed outside tether
    update_state: UpdateState | None = None
    update_message: str = ""
    previous: Labels | None = None  # the spec before the last update (what a rollback restores)
    updated_at: datetime | None = None
    # The node that holds the project's volumes, as tether pinned the service to it ("" while
    # unpinned): written with the placement constraint, read back every pass.
    volume_node: str = ""


@dataclass(frozen=True)
class Task:
    """One of a service's tasks: a container Swarm runs (or tries to run) on a node."""

    id: str
    service_id: str
    node_id: str  # "" while unplaced
    state: str  # Swarm's task state
    desired_state: str  # running, shutdown, ...
    version: int
    spec_hash: str
    restart_token: int
    since: datetime  # of its current state
    upstream: str | None = None  # `NODE-ADDRESS:PORT`: where its port is published, if it runs
    error: str = ""  # Swarm's `Status.Err`
    message: str = ""  # Swarm's `Status.Message`
    exit_code: int | None = None
    created_at: datetime | None = None
    slot: int = 0  # Swarm's replica slot: a replacement takes its predecessor's

    @property
    def exited(self) -> bool:
        return self.state in ENDED

    @property
    def oom_killed(self) -> bool:
        return False  # Swarm's task status does not tell


def serves(task: Task, nodes: dict[str, Node]) -> bool:
    """Running on a node that is up and not drained, and meant to: its port can answer, and
    will go on answering (Swarm stops the tasks of a drained node, first thing)."""
    node = nodes.get(task.node_id)
    return (
        task.state == "running"
        and task.desired_state == "running"
        and task.upstream is not None
        and node is not None
        and node.up
        and node.availability != "drain"
    )


def alive(task: Task, nodes: dict[str, Node]) -> bool:
    """Holds (or is about to hold) a container: running or on its way, and not on a node that is
    down (whose tasks Swarm replaces elsewhere)."""
    if task.state not in ON_THE_WAY and task.state != "running":
        return False
    if task.state == "running" or task.node_id:
        node = nodes.get(task.node_id)
        return node is not None and node.up
    return task.desired_state == "running"


@dataclass(frozen=True)
class Observed:
    services: tuple[Service, ...]
    tasks: tuple[Task, ...]
    nodes: dict[str, Node]
    now: datetime
    healthy: dict[str, bool] = field(default_factory=dict)  # task id → endpoint answered
    route: Route | None = None  # the endpoint's route, as the proxy has it

    def serves(self, task: Task) -> bool:
        return serves(task, self.nodes)

    def routed(self) -> Task | None:
        """The task the endpoint's traffic goes to, if the route leads to one."""
        route = self.route
        if route is None or route.held:
            return None
        return next((t for t in self.tasks if t.upstream == route.upstream), None)

    def describe(self) -> str:
        if not self.services:
            return "none"
        parts = []
        for service in self.services:
            running = sum(
                1 for t in self.tasks if t.service_id == service.id and t.state == "running"
            )
            state = f":{service.update_state}" if service.update_state in UPDATING else ""
            parts.append(f"v{service.version}x{service.replicas}({running} running){state}")
        return ",".join(parts)


@dataclass(frozen=True)
class ServiceSummary:
    """A service as the resync's one list shows it, with its tasks from the one task list."""

    service: Service
    tasks: tuple[Task, ...]
