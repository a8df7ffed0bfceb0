"""The seam between the reconciler and what runs projects: a `Runtime`.

A runtime can be observed (one call for every project, one for a project, a stream of changes)
and acted on; it has its own pure planner, which turns (desired, observed) into its next step.
The reconciler's pass loop, the queue, the triggers and the status writer drive this protocol
and never learn which runtime runs: `tether.operator.engine` (one Docker engine) is one.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Hashable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from tether.api.models import ClusterNode, DesiredSnapshot, EventKind, ObservedVolume, Phase
from tether.operator.desired import Desired, Memory

ObservedT = TypeVar("ObservedT")


class RuntimeFault(Exception):
    """The runtime did not do what was asked. `status` is its HTTP status code, if it answered;
    a fault that is not `transient` (an image that does not exist) waits for a new desire."""

    transient = True

    def __init__(self, operation: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{operation}: {message}" + (f" (HTTP {status})" if status else ""))
        self.operation = operation
        self.status = status


class LostLease(Exception):
    """This operator does not hold the lease (any more): another one may be active, so nothing
    more may be asked of the runtime. Raised before a request is written, never after one was:
    a call it ends has changed nothing (a read before it, such as an inspect, may have gone)."""


class Refused(RuntimeFault):
    """The runtime refused an action about the state of what it runs. Not believed: the pass
    looks again and its planner decides."""


class Step(Protocol):
    """One action of a runtime's planner, carried out by that runtime."""

    @property
    def kind(self) -> EventKind:
        """The kind of event that records it."""
        ...

    @property
    def label(self) -> str:
        """How logs and events name it: `create v2`."""
        ...

    @property
    def key(self) -> Hashable:
        """Equal keys in a row: the same action on an unchanged workload, so no progress."""
        ...


class Workload(Protocol):
    """What status reports of the container (or task) that is, or will be, the project's."""

    @property
    def id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def exited(self) -> bool: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def oom_killed(self) -> bool: ...


@dataclass(frozen=True)
class Finalize:
    """Everything the project ran is gone: the project itself can be deleted."""

    label = "finalize"
    kind = EventKind.ACTION

    @property
    def key(self) -> Hashable:
        return (Finalize,)


@dataclass(frozen=True)
class FailRollout:
    """The target deployment missed its Ready deadline: go back to the fallback."""

    version: int
    kind = EventKind.HEALTH

    @property
    def label(self) -> str:
        return f"fail-rollout v{self.version}"

    @property
    def key(self) -> Hashable:
        return (FailRollout, self.version)


@dataclass(frozen=True)
class Decision:
    """A planner's answer: the next step (None: nothing to do now), and what to report."""

    action: Step | None
    phase: Phase
    ready: bool
    reason: str
    message: str
    memory: Memory
    requeue_after: float | None = None  # look again after this long even if nothing happens
    stalled: bool = False
    workload: Workload | None = None  # the one that is (or will be) the project's
    ready_version: int | None = None  # the version seen Ready in this decision
    route: str | None = None  # where the endpoint's route goes, as last seen
    serving: Workload | None = None  # what that route leads to
    volumes: tuple[ObservedVolume, ...] = ()  # the project's volumes, as observed
    # The workload runs and only its endpoint's first answer is awaited: looking again takes a
    # probe, no runtime call.
    endpoint_pending: bool = False
    node: str | None = None  # where the workload runs, for a runtime of several nodes


class Runtime(Protocol[ObservedT]):
    """What the reconciler and the operator's triggers need of a runtime."""

    async def observe(
        self, desired: Desired, memory: Memory, previous: ObservedT | None = None
    ) -> ObservedT:
        """What runs for one project, freshly (or what `act` last returned), with its endpoint
        probed where it matters."""
        ...

    def plan(self, desired: Desired, observed: ObservedT, memory: Memory) -> Decision:
        """The runtime's pure planner."""
        ...

    async def act(self, desired: Desired, step: Step, observed: ObservedT) -> ObservedT | None:
        """Carry out one of its planner's steps, and return what the next step is decided on
        (None: look afresh). Raises `RuntimeFault`; `Refused` when the runtime would not."""
        ...

    def describe(self, observed: ObservedT) -> str:
        """What was observed, in a few words for the pass's log line: `v1:running`."""
        ...

    async def delete_volumes(self, desired: Desired) -> list[str]:
        """Remove the project's volumes, once nothing runs for it: the one path that deletes
        data, taken only for a deletion that asked for it (`tether destroy --delete-volumes`);
        returns the steps taken. Raises `RuntimeFault` if a volume stays."""
        ...

    async def volume_sizes(self) -> dict[str, int]:
        """The size of every volume of the installation, by its runtime name (a costly call:
        asked once per resync)."""
        ...

    async def remove_orphans(self, project: str, acting: Callable[[], bool]) -> list[str]:
        """Remove whatever still runs for a project that no longer exists, while `acting()`;
        returns the steps taken."""
        ...

    async def survey(self) -> Survey:
        """Every project's workloads, in a call or two (not one per project)."""
        ...

    def changes(self, since: float) -> AsyncGenerator[str, None]:
        """Names of projects whose workloads changed (save by this runtime's own actions), from
        Unix time `since`, until the stream ends."""
        ...

    async def ping(self) -> None: ...

    async def ping_proxy(self) -> None:
        """Whether the proxy of the projects' endpoints answers (raises `RuntimeFault`)."""
        ...

    async def close(self) -> None: ...


class Survey(Protocol):
    """One look at every project's workloads, as the resync takes it."""

    def projects(self) -> frozenset[str]:
        """The projects that have a workload."""
        ...

    def at_rest(self, desired: Desired, snapshot: DesiredSnapshot) -> bool:
        """Whether the project is converged as far as this look and its status can tell; one
        that may not be gets a full pass."""
        ...

    def nodes(self) -> list[ClusterNode] | None:
        """The nodes this look found, for a runtime of several (None: a runtime of one)."""
        ...
