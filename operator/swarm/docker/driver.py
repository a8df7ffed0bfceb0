"""The swarm driver: the swarm runtime's only way to the Swarm manager's Docker API.

It acts only on services that carry this installation's labels, and never trusts what an error
says about state: a refused write (a service gone, a name taken, a version that moved on) is
reported, and the runtime reads the services again before anything is decided. Writes name the
service's version (Swarm's compare-and-swap) and are never forced.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import aiodocker
import structlog

from tether.operator.desired import Volume, Want
from tether.operator.dockerapi import OUT_OF_SEQUENCE, DockerCalls
from tether.operator.labels import LABEL_INSTALLATION
from tether.operator.swarm.docker.decode import node_from, service_from, task_from
from tether.operator.swarm.docker.faults import (
    NameConflict,
    NotASwarmManager,
    SwarmFault,
    SwarmRefused,
    SwarmUnavailable,
)
from tether.operator.swarm.docker.spec import Placement, project_of, service_spec
from tether.operator.swarm.state import Node, Service, Task

log = structlog.get_logger("tether.swarm")


class SwarmDriver(DockerCalls):
    unavailable = SwarmUnavailable

    async def ping(self) -> None:
        """The engine answers and is a Swarm manager."""
        info = await self.call("info", lambda: self.client.system.info())
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise NotASwarmManager(
                "info",
                f"the Docker engine at {self.url} is not a Swarm manager "
                f"(swarm state: {swarm.get('LocalNodeState') or 'inactive'}); run "
                "`docker swarm init` there, or point TETHER_DOCKER_URL at a manager",
            )

    async def nodes(self) -> dict[str, Node]:
        listed = await self.call("nodes", lambda: self.client.nodes.list())
        return {node.id: node for node in map(node_from, listed)}

    async def services(self, project: str | None = None) -> list[Service]:
        filters = self.label_filter(project)
        listed = await self.call("services", lambda: self.client.services.list(filters=filters))
        return [service_from(raw) for raw in listed]

    async def tasks(self, nodes: dict[str, Node], services: list[str] | None = None) -> list[Task]:
        """The tasks of the named services (None: every task of the cluster, in one call)."""
        if services == []:
            return []
        filters = {"service": services} if services is not None else None
        listed = await self.call("tasks", lambda: self.client.tasks.list(filters=filters))
        return [task_from(raw, nodes) for raw in listed]

    async def observe(self, project: str) -> tuple[list[Service], list[Task], dict[str, Node]]:
        """The project's services, their tasks and the nodes, freshly."""
        services = await self.services(project)
        nodes = await self.nodes()
        tasks = await self.tasks(nodes, [s.name for s in services])
        return services, tasks, nodes

    async def survey(self) -> tuple[list[Service], list[Task], dict[str, Node]]:
        """Every service of this installation, every task and every node: three calls, however
        many projects there are."""
        services = await self.services()
        nodes = await self.nodes()
        ours = {s.id for s in services}
        tasks = [t for t in await self.tasks(nodes) if t.service_id in ours]
        return services, tasks, nodes

    def project_of(self, service: Service) -> str | None:
        return project_of(service.name, self.installation)

    def placement(
        self, project: str, owner: str, volumes: tuple[Volume, ...], node: str
    ) -> Placement:
        return Placement(self.installation, project, owner, volumes, node)

    async def create(self, project: str, want: Want, replicas: int, placement: Placement) -> None:
        spec = service_spec(self.installation, project, want, replicas, placement)
        try:
            await self.call(
                "service-create",
                lambda: self.client._query_json("services/create", method="POST", data=spec),
                change=True,
            )
        except aiodocker.DockerError as exc:
            if exc.status == 409:
                await self._check_name_holder(spec["Name"], exc)
                raise SwarmRefused("service-create", exc.message, exc.status) from exc
            raise SwarmFault("service-create", exc.message, exc.status) from exc

    async def _check_name_holder(self, name: str, exc: aiodocker.DockerError) -> None:
        try:
            raw = await self.call("service-inspect", lambda: self.client.services.inspect(name))
        except aiodocker.DockerError:
            return  # gone already: the next pass creates it
        labels = (raw.get("Spec") or {}).get("Labels") or {}
        if labels.get(LABEL_INSTALLATION) != self.installation:
            raise NameConflict(
                "service-create",
                f"a service not managed by tether already has the name {name!r}; tether "
                "leaves it alone: rename or remove it",
                exc.status,
            ) from exc

    async def update(
        self, project: str, service: Service, want: Want, replicas: int, placement: Placement
    ) -> None:
        """Write `want`'s spec over `service` as it was at its observed version."""
        spec = service_spec(self.installation, project, want, replicas, placement)
        spec["Name"] = service.name  # a service cannot be renamed
        try:
            await self.call(
                "service-update",
                lambda: self.client._query_json(
                    f"services/{service.id}/update",
                    method="POST",
                    params={"version": service.index},
                    data=spec,
                ),
                change=True,
            )
        except aiodocker.DockerError as exc:
            if exc.status == 404 or OUT_OF_SEQUENCE in str(exc.message):
                raise SwarmRefused("service-update", exc.message, exc.status) from exc
            raise SwarmFault("service-update", exc.message, exc.status) from exc

    async def remove(self, service: Service) -> None:
        try:
            await self.call(
                "service-remove", lambda: self.client.services.delete(service.id), change=True
            )
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise SwarmRefused("service-remove", exc.message, exc.status) from exc
            raise SwarmFault("service-remove", exc.message, exc.status) from exc

    async def events(self, since: float | None = None) -> AsyncGenerator[str, None]:
        """Names of projects whose service changed, or that may run on a node that changed (a
        node going down, drained, back), until the stream ends (see `stream`). Swarm sends no
        task events: a task that moves is seen by the passes that wait for it, and by the
        resync."""
        async with contextlib.aclosing(self.stream({"type": ["service", "node"]}, since)) as events:
            async for event in events:
                if event.get("Type") == "node":
                    for service in await self.services():
                        if (project := self.project_of(service)) is not None:
                            yield project
                    continue
                name = ((event.get("Actor") or {}).get("Attributes") or {}).get("name", "")
                if (project := project_of(name, self.installation)) is not None:
                    yield project
