"""What the engine and the swarm runtime are alike made of: a driver to what runs projects, an
endpoint prober, and this installation's stable endpoints on a proxy that may also serve another
installation's. Each runtime adds its own observing, planning and acting.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from typing import Generic, Protocol, TypeVar

from tether.api.models import Deployment
from tether.operator.desired import Desired, Labelled, Memory, effective_want
from tether.operator.health import Prober
from tether.operator.routing import Proxy, RemoveRoute, Route, SetRoute


class Driver(Protocol):
    """What every runtime's driver offers beside its own calls."""

    guard: Callable[[], None]  # the operator's lease check, before every request

    def events(self, since: float | None = None) -> AsyncGenerator[str, None]: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class Reachable(Labelled, Protocol):
    """A workload (a container, a task) whose endpoint can be probed."""

    @property
    def id(self) -> str: ...
    @property
    def upstream(self) -> str | None: ...


DriverT = TypeVar("DriverT", bound=Driver)


class RoutedRuntime(Generic[DriverT]):
    def __init__(self, driver: DriverT, prober: Prober, proxy: Proxy, ports: range) -> None:
        """`ports`: this installation's endpoint ports; routes of other ports (another
        installation's, on a shared proxy) are never read as its own, nor removed."""
        self.driver = driver
        self.proxy = proxy
        self._ports = ports
        self._prober = prober

    async def _probe_each(
        self,
        desired: Desired,
        memory: Memory,
        serving: Iterable[Reachable],
        routed: Reachable | None,
    ) -> dict[str, bool]:
        """The endpoint of each of the `serving` workloads that runs an asked-for deployment,
        or that the route leads to (`routed`), probed afresh on its own upstream, by id. The
        routed one, which serves, is given the benefit of a few probes before it counts as down
        (`Prober.still_answers`)."""
        want = effective_want(desired, memory) if desired.running else None
        if want is None:
            return {}
        asked = [w for w in (desired.target, desired.fallback) if w is not None]
        healthy: dict[str, bool] = {}
        for workload in serving:
            if workload.upstream is None:
                continue
            if workload == routed or any(w.matches(workload) for w in asked):
                spec = deployment_of(workload, desired) or want.deployment
                probe = (
                    self._prober.still_answers if workload == routed else self._prober.healthy_at
                )
                healthy[workload.id] = await probe(spec.health, spec.port, workload.upstream)
        return healthy

    async def _reroute(self, step: SetRoute | RemoveRoute) -> None:
        """Carry out a planner's route step, after the lease check (as before a Docker
        request)."""
        self.driver.guard()
        if isinstance(step, SetRoute):
            await self.proxy.set_route(step.port, step.route)
        else:
            await self.proxy.remove_route(step.port)

    async def _routes(self) -> dict[int, Route | None]:
        routes = await self.proxy.routes()
        return {port: route for port, route in routes.items() if port in self._ports}

    async def _remove_orphan_routes(self, project: str, acting: Callable[[], bool]) -> list[str]:
        """Remove the routes left for a project that no longer exists, while `acting()`;
        returns the steps taken."""
        removed = []
        for port, route in (await self._routes()).items():
            if route is not None and route.project == project and acting():
                await self.proxy.remove_route(port)
                removed.append(RemoveRoute(port).label)
        return removed

    def changes(self, since: float) -> AsyncGenerator[str, None]:
        return self.driver.events(since=since)

    async def ping(self) -> None:
        await self.driver.ping()

    async def ping_proxy(self) -> None:
        await self.proxy.ping()

    async def close(self) -> None:
        await self.driver.close()


def deployment_of(workload: Labelled, desired: Desired) -> Deployment | None:
    """The deployment a workload runs, if it is the target or the fallback."""
    for want in (desired.target, desired.fallback):
        if want is not None and want.version == workload.version:
            return want.deployment
    return None


def surveyed(
    by_project: Mapping[str, object], routes: Mapping[int, Route | None]
) -> frozenset[str]:
    """The projects a survey found: those with a workload, and those with a route."""
    routed = {route.project for route in routes.values() if route is not None}
    return frozenset(by_project) | routed
