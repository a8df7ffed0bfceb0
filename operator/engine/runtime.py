"""The engine runtime: one Docker engine, one container per project, tether its only controller
(restart policy `no`). It binds the Docker driver, the endpoint prober and the engine's planner to
the runtime seam (`tether.operator.runtime.Runtime`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from tether.api.models import DesiredSnapshot, ObservedVolume
from tether.operator.desired import Desired, Memory, memory_of, status_settled
from tether.operator.engine import planner
from tether.operator.engine.docker.driver import DockerDriver
from tether.operator.engine.docker.erase import erase_volumes
from tether.operator.engine.docker.faults import DockerFault, DockerRefused
from tether.operator.engine.planner import Create, CreateVolume, Remove, Start, Stop, Unpause
from tether.operator.engine.state import LIVE, Container, Observed, Summary, VolumeSeen
from tether.operator.health import Prober
from tether.operator.routedruntime import RoutedRuntime, surveyed
from tether.operator.routing import Proxy, RemoveRoute, Route, SetRoute
from tether.operator.runtime import Decision, Step

# Passes whose start of the same container Docker answered with an error (each pass after the
# driver's three tries) before that container is given up for a fresh one.
FAILED_STARTS_BEFORE_REPLACING = 3
ORPHAN_STOP_GRACE_S = 10


class EngineRuntime(RoutedRuntime[DockerDriver]):
    def __init__(self, driver: DockerDriver, prober: Prober, proxy: Proxy, ports: range) -> None:
        super().__init__(driver, prober, proxy, ports)
        self._failed_starts: dict[str, int] = {}  # container id → passes whose start failed

    async def observe(
        self, desired: Desired, memory: Memory, previous: Observed | None = None
    ) -> Observed:
        """The project's containers and its route (`previous`'s, when given), with the endpoint
        of each container that runs the wanted deployment, or that the route leads to, probed
        afresh on its own loopback port."""
        if previous is None:
            # Docker and the proxy are asked at once: a pass's first look is on its critical path.
            containers, volumes, route = await asyncio.gather(
                self.driver.observe(desired.name),
                self.driver.volumes(desired.name),
                self.proxy.route(desired.host_port),
            )
        else:
            containers, route = previous.containers, previous.route
            volumes = previous.volumes
        seen = Observed(
            containers, datetime.now(UTC), {}, self._unstartable(), route, volumes=volumes
        )
        return replace(
            seen,
            healthy=await self._probe(desired, memory, seen),
            in_flight=await self._in_flight(seen),
        )

    async def _probe(self, desired: Desired, memory: Memory, seen: Observed) -> dict[str, bool]:
        running = (c for c in seen.containers if c.state == "running")
        return await self._probe_each(desired, memory, running, seen.routed())

    async def _in_flight(self, seen: Observed) -> dict[str, int]:
        """Asked of the proxy only while a container the route left may still be draining."""
        routed = seen.routed()
        draining = [c for c in seen.containers if c.state in LIVE and c != routed]
        if seen.route is None or not draining:
            return {}
        return await self.proxy.in_flight()

    def plan(self, desired: Desired, observed: Observed, memory: Memory) -> Decision:
        decision = planner.plan(desired, observed, memory)
        route = observed.route
        shown = None if route is None else "held" if route.held else route.upstream
        return replace(
            decision, route=shown, serving=observed.routed(), volumes=_volumes_seen(observed)
        )

    def describe(self, observed: Observed) -> str:
        return observed.describe()

    async def act(self, desired: Desired, step: Step, observed: Observed) -> Observed | None:
        try:
            await self._carry_out(desired, step)
        except DockerFault as fault:
            if not isinstance(fault, DockerRefused):
                self._count_failed_start(step, fault)
            raise
        match step:
            case SetRoute(route=route):
                return replace(observed, route=route)
            case RemoveRoute():
                return replace(observed, route=None)
            case CreateVolume(volume=volume):
                made = VolumeSeen(
                    volume.docker_name, volume.name, datetime.now(UTC), owner=desired.owner
                )
                return replace(observed, volumes=(*observed.volumes, made))
        containers = await self._look_again(step, observed.containers)
        return None if containers is None else replace(observed, containers=containers)

    async def _carry_out(self, desired: Desired, step: Step) -> None:
        match step:
            case CreateVolume(volume=volume):
                await self.driver.create_volume(desired.name, desired.owner, volume)
            case Create(want=want):
                await self.driver.create(desired.name, want, desired.volumes_of(want))
            case SetRoute() | RemoveRoute():
                await self._reroute(step)
            case Start(container=c):
                await self.driver.start(c.id)
                self._failed_starts.pop(c.id, None)
            case Stop(container=c, grace_s=grace):
                await self.driver.stop(c.id, grace)
            case Unpause(container=c):
                await self.driver.unpause(c.id)
            case Remove(container=c):
                await self.driver.remove(c.id)
                self._failed_starts.pop(c.id, None)
            case _:
                raise AssertionError(f"not an engine action: {step}")

    async def _look_again(
        self, step: Step, containers: tuple[Container, ...]
    ) -> tuple[Container, ...] | None:
        """What the next step decides on: the acted-on container inspected afresh (gone, after a
        removal), the others as they were a step ago (an event from anyone else queues another
        pass). None, for a full look, when there is nothing to look at again."""
        match step:
            case Start(container=acted) | Stop(container=acted) | Unpause(container=acted):
                fresh = await self.driver.inspect(acted.id)
                replaced = (fresh if c.id == acted.id else c for c in containers)
                return tuple(c for c in replaced if c is not None)
            case Remove(container=acted):
                return tuple(c for c in containers if c.id != acted.id)
            case Create(want=want):
                # Docker takes a name where it takes an id: the new container's id is not known.
                created = await self.driver.inspect(want.name)
                return (*containers, created) if created is not None else None
        return None

    def _count_failed_start(self, step: Step, fault: DockerFault) -> None:
        """A start Docker answered with an error (after the driver's own retries), as opposed
        to a lost connection or a timeout, which say nothing about the container."""
        if isinstance(step, Start) and fault.status is not None and fault.status < 600:
            container = step.container.id
            self._failed_starts[container] = self._failed_starts.get(container, 0) + 1

    def _unstartable(self) -> frozenset[str]:
        return frozenset(
            container
            for container, failures in self._failed_starts.items()
            if failures >= FAILED_STARTS_BEFORE_REPLACING
        )

    async def delete_volumes(self, desired: Desired) -> list[str]:
        return await erase_volumes(self.driver, desired.name)

    async def volume_sizes(self) -> dict[str, int]:
        return await self.driver.volume_sizes()

    async def remove_orphans(self, project: str, acting: Callable[[], bool]) -> list[str]:
        removed = await self._remove_orphan_routes(project, acting)
        for container in await self.driver.observe(project):
            if not acting():
                break
            try:
                if container.state in LIVE:
                    await self.driver.stop(container.id, ORPHAN_STOP_GRACE_S)
                await self.driver.remove(container.id)
                self._failed_starts.pop(container.id, None)
            except DockerRefused:
                continue
            removed.append(f"remove v{container.version}")
        return removed

    async def survey(self) -> EngineSurvey:
        by_project: dict[str, list[Summary]] = {}
        for summary in await self.driver.list_all():
            by_project.setdefault(summary.project, []).append(summary)
        return EngineSurvey(by_project, await self._routes())


@dataclass(frozen=True)
class EngineSurvey:
    """One `docker ps` of the installation's containers, by project."""

    by_project: dict[str, list[Summary]]
    routes: dict[int, Route | None]  # and the proxy's routes, by endpoint port

    def projects(self) -> frozenset[str]:
        return surveyed(self.by_project, self.routes)

    def at_rest(self, desired: Desired, snapshot: DesiredSnapshot) -> bool:
        return status_settled(desired, snapshot) and planner.at_rest(
            desired,
            memory_of(snapshot),
            self.by_project.get(desired.name, []),
            self.routes.get(desired.host_port),
        )

    def nodes(self) -> None:
        return None  # one engine: no nodes to tell


def _volumes_seen(observed: Observed) -> tuple[ObservedVolume, ...]:
    return tuple(
        ObservedVolume(
            name=v.name,
            docker_name=v.docker_name,
            mounted_by=tuple(c.name for c in observed.containers if v.docker_name in c.mounts),
            created_at=v.created_at,
        )
        for v in sorted(observed.volumes, key=lambda v: v.name)
    )
