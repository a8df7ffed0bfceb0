"""The swarm runtime: a Docker Swarm cluster, one service per project, placed, restarted and
updated start-first by Swarm; tether converges each service's spec, routes the project's stable
endpoint to the task that answers, and repairs drift. It binds the swarm driver, the endpoint
prober and the swarm planner to the runtime seam (`tether.operator.runtime.Runtime`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from tether.api.models import ClusterNode, DesiredSnapshot, ObservedVolume
from tether.operator.desired import Desired, Memory, memory_of, status_settled
from tether.operator.health import Prober
from tether.operator.routedruntime import RoutedRuntime, deployment_of, surveyed
from tether.operator.routing import Proxy, RemoveRoute, Route, SetRoute
from tether.operator.runtime import Decision, Step
from tether.operator.swarm import planner
from tether.operator.swarm.docker.driver import SwarmDriver
from tether.operator.swarm.docker.faults import SwarmRefused
from tether.operator.swarm.planner import CreateService, RemoveService, UpdateService
from tether.operator.swarm.state import Node, Observed, ServiceSummary, Task


class SwarmRuntime(RoutedRuntime[SwarmDriver]):
    def __init__(self, driver: SwarmDriver, prober: Prober, proxy: Proxy, ports: range) -> None:
        super().__init__(driver, prober, proxy, ports)
        # The hostname of the node each project's volumes are on, as last observed: what
        # `delete_volumes` names once the service (and its pin) is gone.
        self._volume_nodes: dict[str, str] = {}

    async def observe(
        self, desired: Desired, memory: Memory, previous: Observed | None = None
    ) -> Observed:
        """The project's services, their tasks, the nodes and the route (`previous`'s, when
        given), with the endpoint of each task that runs an asked-for deployment, or that the
        route leads to, probed afresh at its node's address."""
        if previous is None:
            services, tasks, nodes = await self.driver.observe(desired.name)
            route = await self.proxy.route(desired.host_port)
            seen = Observed(tuple(services), tuple(tasks), nodes, datetime.now(UTC), {}, route)
            for service in services:
                if (node := nodes.get(service.volume_node)) is not None:
                    self._volume_nodes[desired.name] = node.hostname
        else:
            seen = replace(previous, now=datetime.now(UTC))
        return replace(seen, healthy=await self._probe(desired, memory, seen))

    async def _probe(self, desired: Desired, memory: Memory, seen: Observed) -> dict[str, bool]:
        serving = (t for t in seen.tasks if seen.serves(t))
        return await self._probe_each(desired, memory, serving, seen.routed())

    def plan(self, desired: Desired, observed: Observed, memory: Memory) -> Decision:
        decision = planner.plan(desired, observed, memory)
        route = observed.route
        shown = None if route is None else "held" if route.held else route.upstream
        task = decision.workload
        node = observed.nodes.get(task.node_id) if isinstance(task, Task) else None
        return replace(
            decision,
            route=shown,
            serving=observed.routed(),
            node=node.hostname if node is not None else None,
            volumes=_volumes_seen(desired, observed),
        )

    def describe(self, observed: Observed) -> str:
        return observed.describe()

    async def act(self, desired: Desired, step: Step, observed: Observed) -> Observed | None:
        match step:
            case SetRoute(route=route):
                await self._reroute(step)
                return replace(observed, route=route)
            case RemoveRoute():
                await self._reroute(step)
                return replace(observed, route=None)
            case CreateService(want=want, replicas=replicas):
                placement = self.driver.placement(
                    desired.name, desired.owner, desired.volumes_of(want), ""
                )
                await self.driver.create(desired.name, want, replicas, placement)
            case UpdateService(service=service, want=want, replicas=replicas, node=node):
                placement = self.driver.placement(
                    desired.name, desired.owner, desired.volumes_of(want), node
                )
                await self.driver.update(desired.name, service, want, replicas, placement)
            case RemoveService(service=service):
                await self.driver.remove(service)
            case _:
                raise AssertionError(f"not a swarm action: {step}")
        return None  # Swarm acts on a write in its own time: look afresh

    async def delete_volumes(self, desired: Desired) -> list[str]:
        """The manager's API removes volumes on the manager alone, and a project's are on the
        worker it ran on: nothing is removed; what to run, and where, is said instead."""
        node = self._volume_nodes.pop(desired.name, None)
        where = node or "the node the project ran on (its status and events name it)"
        return [
            f"kept volume {v.docker_name} on {where}: the Swarm manager cannot remove a volume "
            f"on another node; run `docker volume rm {v.docker_name}` there"
            for v in desired.volumes
        ]

    async def volume_sizes(self) -> dict[str, int]:
        # Only each node's own engine measures its volumes (`GET /system/df`); the operator talks
        # to the manager alone, which holds none of them.
        return {}

    async def remove_orphans(self, project: str, acting: Callable[[], bool]) -> list[str]:
        removed = await self._remove_orphan_routes(project, acting)
        for service in await self.driver.services(project):
            if not acting():
                break
            try:
                await self.driver.remove(service)
            except SwarmRefused:
                continue
            removed.append(RemoveService(service).label)
        return removed

    async def survey(self) -> SwarmSurvey:
        services, tasks, nodes = await self.driver.survey()
        by_project: dict[str, list[ServiceSummary]] = {}
        for service in services:
            project = self.driver.project_of(service)
            if project is None:
                continue
            mine = tuple(t for t in tasks if t.service_id == service.id)
            by_project.setdefault(project, []).append(ServiceSummary(service, mine))
        return SwarmSurvey(by_project, nodes, await self._routes())


@dataclass(frozen=True)
class SwarmSurvey:
    """One list of the installation's services, of the cluster's tasks and of its nodes."""

    by_project: dict[str, list[ServiceSummary]]
    cluster: dict[str, Node]
    routes: dict[int, Route | None]  # and the proxy's routes, by endpoint port

    def projects(self) -> frozenset[str]:
        return surveyed(self.by_project, self.routes)

    def at_rest(self, desired: Desired, snapshot: DesiredSnapshot) -> bool:
        return status_settled(desired, snapshot) and planner.at_rest(
            desired,
            memory_of(snapshot),
            self.by_project.get(desired.name, []),
            self.cluster,
            self.routes.get(desired.host_port),
        )

    def nodes(self) -> list[ClusterNode]:
        return [
            ClusterNode(
                id=n.id,
                hostname=n.hostname,
                address=n.address,
                state=n.state,
                availability=n.availability,
                role=n.role,
            )
            for n in self.cluster.values()
        ]


def _volumes_seen(desired: Desired, observed: Observed) -> tuple[ObservedVolume, ...]:
    """The project's volumes, mounted by the tasks that run (Swarm does not show a worker's
    volumes to the manager: neither their creation time nor whether they exist yet)."""
    mounts = [
        (t.id, {v.name for v in spec.volumes})
        for t in observed.tasks
        if t.state == "running" and (spec := deployment_of(t, desired)) is not None
    ]
    return tuple(
        ObservedVolume(
            v.name, v.docker_name, tuple(t for t, names in mounts if v.name in names), None
        )
        for v in desired.volumes
    )
