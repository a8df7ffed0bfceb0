"""Routes: where the proxy sends a project's stable endpoint. The proxy is part of the observed
world: each pass reads its project's route back and corrects it.

No external calls or any I/O activities are done here: the `Proxy` protocol is what the runtimes
need of a proxy (`tether.operator.haproxy` is the real one, over HAProxy's admin socket).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from tether.api.models import EventKind, HealthCheck, Phase
from tether.operator.desired import Desired, Memory, Want
from tether.operator.runtime import Decision, RuntimeFault

Mode = Literal["http", "tcp"]


class ProxyFault(RuntimeFault):
    """The proxy could not be reached or did not do what was asked: always worth retrying, and
    never a reason to stop a container that serves."""


HELD = "hold:0"  # shaped like an upstream, so the proxy reads every value the same way


@dataclass(frozen=True)
class Route:
    """A stable endpoint's route: to `upstream` (an `address:port` the proxy connects to), in
    HTTP mode (a switch applies to the next request) or TCP mode (to new connections), set at
    Unix time `since` (where a drain's timeout counts from). A route whose upstream is `HELD`
    makes new connections wait (up to the proxy's hold time) for the next route instead of being
    refused: the gap of a stop-first replacement."""

    mode: Mode
    upstream: str
    since: float
    project: str  # whose endpoint: a route left over for a deleted project is found by it

    @property
    def held(self) -> bool:
        return self.upstream == HELD

    def encode(self) -> str:
        """As a value of the proxy's route map: `http:127.0.0.1:32768:1733080000.125:shop`
        (the proxy reads the mode, host and port fields)."""
        return f"{self.mode}:{self.upstream}:{self.since:.3f}:{self.project}"

    @classmethod
    def decode(cls, value: str) -> Route | None:
        """None for a value tether did not write (someone edited the map by hand)."""
        mode, _, rest = value.partition(":")
        rest, _, project = rest.rpartition(":")
        upstream, _, since = rest.rpartition(":")
        host, _, port = upstream.rpartition(":")
        if mode not in ("http", "tcp") or not host or not port.isdigit():
            return None
        if not project:
            return None
        try:
            when = float(since)
        except ValueError:
            return None
        return cls("http" if mode == "http" else "tcp", upstream, when, project)

    def same_way(self, other: Route | None) -> bool:
        """Whether `other` sends traffic the same way, whenever it was set."""
        return other is not None and (other.mode, other.upstream) == (self.mode, self.upstream)


def mode_of(health: HealthCheck | None) -> Mode:
    """An HTTP-checked deployment is proxied per request; anything else per connection."""
    return "http" if health is not None and health.type == "http" else "tcp"


@dataclass(frozen=True)
class SetRoute:
    """A planner's step: route the endpoint on `port` (to `version`'s workload, or held)."""

    port: int
    route: Route
    version: int | None
    kind = EventKind.ROUTED

    @property
    def label(self) -> str:
        return "hold" if self.version is None else f"route v{self.version}"

    @property
    def key(self) -> Hashable:
        return (SetRoute, self.port, self.route.mode, self.route.upstream)


@dataclass(frozen=True)
class RemoveRoute:
    """A planner's step: the endpoint on `port` refuses connections from now on."""

    port: int
    kind = EventKind.ROUTED
    label = "unroute"

    @property
    def key(self) -> Hashable:
        return (RemoveRoute, self.port)


def route_to(desired: Desired, want: Want, upstream: str, at: datetime) -> Route:
    """The endpoint's route to `upstream` (or `HELD`), in the mode of `want`'s health check,
    set at `at`."""
    return Route(mode_of(want.deployment.health), upstream, at.timestamp(), desired.name)


def holding(
    desired: Desired, want: Want, route: Route, gone: str, at: datetime, memory: Memory
) -> Decision:
    """A planner's step while what `route` leads to does not serve (it `gone`, in words): new
    connections wait for the next route rather than reach a dead or failing workload."""
    return Decision(
        SetRoute(desired.host_port, route_to(desired, want, HELD, at), None),
        Phase.REPLACING,
        False,
        "Holding",
        f"holding new connections to :{desired.host_port}: what it routed to ({route.upstream}) "
        f"{gone}",
        memory,
    )


def closing(
    desired: Desired, want: Want | None, route: Route | None, memory: Memory
) -> Decision | None:
    """A planner's first question, whatever the runtime: an endpoint that is routed while the
    project serves nothing there (stopped, deleted, or a deployment without a port) is closed."""
    serving = desired.running and not desired.deleting and want is not None
    if route is None or (serving and want is not None and want.deployment.port):
        return None
    return Decision(
        RemoveRoute(desired.host_port),
        Phase.DELETING if desired.deleting else Phase.STOPPING,
        False,
        "Closing",
        f"closing the endpoint :{desired.host_port}: its route is removed",
        memory,
    )


class Proxy(Protocol):
    """The stable endpoints' proxy, keyed by the endpoint's port. Every call raises
    `ProxyFault` when the proxy does not answer."""

    async def routes(self) -> dict[int, Route | None]:
        """Every route, in one call (None: a value tether cannot read)."""
        ...

    async def route(self, port: int) -> Route | None:
        """The route of one endpoint (None: none, or a value tether cannot read)."""
        ...

    async def set_route(self, port: int, route: Route) -> None:
        """Route `port` (adding it, or switching it: idle kept-alive connections stay open)."""
        ...

    async def remove_route(self, port: int) -> None:
        """Stop routing `port`: new connections to it are refused (absent: nothing to do)."""
        ...

    async def in_flight(self) -> dict[str, int]:
        """Requests (HTTP) or connections (TCP) the proxy has open to each upstream."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
