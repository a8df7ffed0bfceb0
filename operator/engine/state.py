"""What the engine runtime sees of a project: its containers, as Docker shows them.

No external calls or any I/O activities are done here: plain values, built by the engine's
driver, read by its planner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from tether.operator.routing import Route

# Docker's container states that are on their way somewhere: wait and look again.
TRANSITIONAL = frozenset({"removing", "restarting"})
# The states in which a container holds its process (and its published port): it must be
# stopped before it can be removed, and a project desired stopped must have none.
LIVE = frozenset({"running", "paused", "restarting"})


@dataclass(frozen=True)
class Container:
    """One of the project's containers as `docker inspect` shows it, and the labels tether set."""

    id: str
    name: str
    state: str
    version: int
    restart_token: int
    spec_hash: str
    exit_code: int | None = None
    oom_killed: bool = False
    upstream: str | None = None  # `127.0.0.1:PORT`: where Docker publishes its port, if it runs
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    mounts: tuple[str, ...] = ()  # the Docker volumes it mounts, by name

    @property
    def exited(self) -> bool:
        return self.state == "exited"


@dataclass(frozen=True)
class Summary:
    """A container as `docker ps` lists it: enough to tell whether a project needs a pass."""

    id: str
    project: str
    state: str
    version: int
    spec_hash: str
    restart_token: int
    upstream: str | None = None


@dataclass(frozen=True)
class VolumeSeen:
    """One of the project's Docker volumes (labelled as this installation's and the project's)."""

    docker_name: str
    name: str  # the project's name for it
    created_at: datetime | None = None
    owner: str = ""  # of the project it was created for
    project: str = ""


@dataclass(frozen=True)
class Observed:
    containers: tuple[Container, ...]
    now: datetime
    healthy: dict[str, bool] = field(default_factory=dict)  # container id → endpoint answered
    # Containers Docker failed to start again and again (an engine restart can leave one so):
    # disposable, so replaced by a fresh one. Counted by the runtime, not kept in status.
    unstartable: frozenset[str] = frozenset()
    route: Route | None = None  # the endpoint's route, as the proxy has it
    in_flight: dict[str, int] = field(default_factory=dict)  # upstream → requests in flight
    volumes: tuple[VolumeSeen, ...] = ()

    def volume(self, docker_name: str) -> VolumeSeen | None:
        return next((v for v in self.volumes if v.docker_name == docker_name), None)

    def routed(self) -> Container | None:
        """The container the endpoint's traffic goes to, if the route leads to one."""
        route = self.route
        if route is None or route.held:
            return None
        return next((c for c in self.containers if c.upstream == route.upstream), None)

    def describe(self) -> str:
        return ",".join(f"v{c.version}:{c.state}" for c in self.containers) or "none"
