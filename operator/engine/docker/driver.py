"""The Docker driver: the engine runtime's only way to Docker.

It acts only on containers that carry this installation's labels, and it never trusts what an error
code says about state: a refused or unacknowledged action is reported, and the reconciler looks at
the container again before deciding anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator
from typing import Any, Unpack

import aiodocker
import structlog

from tether.operator.desired import Volume, Want
from tether.operator.dockerapi import CALL_TIMEOUT_S, DockerCalls, DockerOptions
from tether.operator.engine.docker.decode import (
    container_from_inspect,
    summary_from_list,
    volume_from_list,
)
from tether.operator.engine.docker.echoes import Echoes
from tether.operator.engine.docker.faults import (
    DockerFault,
    DockerRefused,
    DockerUnavailable,
    ImageNotFound,
    NameConflict,
)
from tether.operator.engine.docker.index import ContainerIndex
from tether.operator.engine.state import Container, Summary, VolumeSeen
from tether.operator.labels import (
    LABEL_INSTALLATION,
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_RESTART,
    LABEL_SPEC_HASH,
    LABEL_VERSION,
    LABEL_VOLUME,
)

log = structlog.get_logger("tether.docker")
UPSTREAM_HOST = "127.0.0.1"  # where containers publish their port, for the proxy only


class DockerDriver(DockerCalls):
    unavailable = DockerUnavailable

    def __init__(self, url: str, installation: str, **options: Unpack[DockerOptions]) -> None:
        super().__init__(url, installation, **options)
        self._echoes = Echoes()
        self._index = ContainerIndex()

    async def ping(self) -> None:
        await self.call("ping", lambda: self.client.system.info())

    async def list_all(self) -> list[Summary]:
        """Every container of this installation, in one call (beside one list of its volumes,
        from which the index learns which projects have any)."""
        with self._index.listing() as listed:
            containers, volumes = await asyncio.gather(
                self.call(
                    "list",
                    lambda: self.client.containers.list(all=True, filters=self.label_filter()),
                ),
                self._list_volumes(self.label_filter()),
            )
            summaries = [summary_from_list(container._container) for container in containers]
            listed(((s.project, s.id) for s in summaries), (v.project for v in volumes))
        return summaries

    async def observe(self, project: str) -> tuple[Container, ...]:
        """The project's containers, freshly inspected: those the index knows, or, while it is
        not to be trusted, those Docker lists."""
        known = self._index.containers_of(project)
        if known is None:
            listed = await self.call(
                "list",
                lambda: self.client.containers.list(all=True, filters=self.label_filter(project)),
            )
            known = frozenset(c.id for c in listed)
        inspected = await asyncio.gather(*(self.inspect(i) for i in sorted(known)))
        return tuple(c for c in inspected if c is not None)

    async def inspect(self, container_id: str) -> Container | None:
        """One container, freshly inspected; None if it is gone."""
        try:
            data = await self.call(
                "inspect", lambda: self.client.containers.container(container_id).show()
            )
        except aiodocker.DockerError as exc:
            if exc.status == 404:  # removed meanwhile
                self._index.destroyed(container_id)
                return None
            raise DockerFault("inspect", exc.message, exc.status) from exc
        return container_from_inspect(data)

    async def volumes(self, project: str) -> tuple[VolumeSeen, ...]:
        """The project's volumes: those labelled as this installation's and the project's (none
        asked of Docker for a project the index knows has none)."""
        if not self._index.may_have_volumes(project):
            return ()
        return await self._list_volumes(self.label_filter(project))

    async def _list_volumes(self, filters: dict[str, list[str]]) -> tuple[VolumeSeen, ...]:
        listed = await self.call(
            "volumes",
            lambda: self.client._query_json("volumes", params={"filters": json.dumps(filters)}),
        )
        return tuple(volume_from_list(v) for v in listed.get("Volumes") or [])

    async def volume_exists(self, docker_name: str) -> bool:
        try:
            await self.call(
                "volume inspect", lambda: self.client._query_json(f"volumes/{docker_name}")
            )
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return False
            raise DockerFault("volume inspect", exc.message, exc.status) from exc
        return True

    async def volume_sizes(self) -> dict[str, int]:
        """The size of each of this installation's volumes, by Docker name, as Docker measures
        them (`docker system df`: it walks every volume, so the operator asks seldom). None
        asked of Docker while the index knows there are none: Engine API 1.41 ignores `type`
        and measures every image and container too, which costs the engine hundreds of ms."""
        if not self._index.may_have_any_volumes():
            return {}
        data = await self.call(
            "df",
            lambda: self.client._query_json("system/df", params={"type": "volume"}),
            deadline_s=CALL_TIMEOUT_S * 4,
        )
        return {
            v["Name"]: int((v.get("UsageData") or {}).get("Size", -1))
            for v in data.get("Volumes") or []
            if (v.get("Labels") or {}).get(LABEL_INSTALLATION) == self.installation
            and int((v.get("UsageData") or {}).get("Size", -1)) >= 0
        }

    async def create_volume(self, project: str, owner: str, volume: Volume) -> None:
        """Create one of the project's volumes. Docker answers a create of an existing name with
        that volume: it is used only if it is this project's (of the same owner)."""
        config = {
            "Name": volume.docker_name,
            "Labels": {
                LABEL_INSTALLATION: self.installation,
                LABEL_PROJECT: project,
                LABEL_VOLUME: volume.name,
                LABEL_OWNER: owner,
            },
        }
        try:
            data = await self.call(
                "volume create",
                lambda: self.client._query_json("volumes/create", method="POST", data=config),
            )
        except aiodocker.DockerError as exc:
            raise DockerFault("volume create", exc.message, exc.status) from exc
        labels = data.get("Labels") or {}
        if labels.get(LABEL_INSTALLATION) != self.installation or labels.get(LABEL_PROJECT) != (
            project
        ):
            raise NameConflict(
                "volume create",
                f"a Docker volume not managed by tether for this project already has the name "
                f"{volume.docker_name!r}; tether leaves it alone: rename or remove it",
            )
        self._index.volume_created(project)
        if labels.get(LABEL_OWNER) != owner:
            raise NameConflict(
                "volume create",
                f"volume {volume.docker_name!r} was kept from a destroyed project of the same "
                f"name owned by {labels.get(LABEL_OWNER)!r}; it is not mounted for another owner: "
                "its owner may re-create the project, or an admin removes the volume",
            )

    async def create(self, project: str, want: Want, volumes: tuple[Volume, ...] = ()) -> None:
        """Create the container of `want`, its port published on loopback on a port Docker
        chooses: the proxy, never a client, connects there; with the project's `volumes` (which
        exist already) mounted."""
        spec = want.deployment
        labels = {
            LABEL_INSTALLATION: self.installation,
            LABEL_PROJECT: project,
            LABEL_VERSION: str(spec.version),
            LABEL_SPEC_HASH: want.spec_hash,
            LABEL_RESTART: str(want.restart_token or 0),
        }
        host_config: dict[str, Any] = {"RestartPolicy": {"Name": "no"}}
        config: dict[str, Any] = {
            "Image": spec.image,
            "Env": [f"{key}={value}" for key, value in spec.env.items()],
            "Labels": labels,
            "StopTimeout": spec.stop_grace_s,
            "HostConfig": host_config,
        }
        if spec.command is not None:
            config["Cmd"] = spec.command
        if spec.port is not None:
            port = f"{spec.port}/tcp"
            config["ExposedPorts"] = {port: {}}
            host_config["PortBindings"] = {port: [{"HostIp": UPSTREAM_HOST, "HostPort": ""}]}
        if spec.memory_mb is not None:
            host_config["Memory"] = spec.memory_mb * 1024 * 1024
        if spec.cpus is not None:
            host_config["NanoCpus"] = int(spec.cpus * 1e9)
        docker_names = {v.name: v.docker_name for v in volumes}
        if spec.volumes:
            host_config["Mounts"] = [
                {
                    "Type": "volume",
                    "Source": docker_names[mount.name],
                    "Target": mount.path,
                    "ReadOnly": mount.read_only,
                }
                for mount in spec.volumes
            ]
        name = want.name
        try:
            with self._echoes.expecting(name, "create"):
                created = await self.call(
                    "create",
                    lambda: self.client.containers.create(config, name=name),
                    change=True,
                )
            self._index.created(project, created.id)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise ImageNotFound(
                    "create",
                    f"image {spec.image!r} does not exist on the Docker host",
                    exc.status,
                ) from exc
            if exc.status == 409:
                await self._check_name_holder(name, exc)
                raise DockerRefused("create", exc.message, exc.status) from exc
            raise DockerFault("create", exc.message, exc.status) from exc

    async def _check_name_holder(self, name: str, exc: aiodocker.DockerError) -> None:
        try:
            data = await self.call("inspect", lambda: self.client.containers.get(name))
        except aiodocker.DockerError:
            return  # gone already: the next pass creates it
        labels = data._container.get("Config", {}).get("Labels") or {}
        if labels.get(LABEL_INSTALLATION) != self.installation:
            raise NameConflict(
                "create",
                f"a container not managed by tether already has the name {name!r}; "
                "tether leaves it alone: rename or remove it",
                exc.status,
            ) from exc

    async def _act(
        self,
        operation: str,
        container_id: str,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        deadline_s: float | None = None,
    ) -> None:
        async def call() -> int:
            # aiodocker's container methods drop the status, and 304 means Docker did nothing.
            async with self.client._query(
                f"containers/{container_id}{path}", method=method, params=params, timeout=None
            ) as response:
                return response.status

        with self._echoes.expecting(container_id, operation) as withdraw_echoes:
            try:
                status = await self.call(operation, call, deadline_s=deadline_s, change=True)
            except aiodocker.DockerError as exc:
                if exc.status == 404:  # no such container
                    self._index.destroyed(container_id)
                if exc.status in (404, 409):
                    withdraw_echoes()
                    raise DockerRefused(operation, exc.message, exc.status) from exc
                raise DockerFault(operation, exc.message, exc.status) from exc
            if status == 304:  # already started, or stopped: no event will come
                withdraw_echoes()
        if operation == "remove":
            self._index.destroyed(container_id)

    async def start(self, container_id: str) -> None:
        await self._act("start", container_id, "POST", "/start")

    async def stop(self, container_id: str, grace_s: int) -> None:
        await self._act(
            "stop",
            container_id,
            "POST",
            "/stop",
            params={"t": grace_s},
            deadline_s=self.call_timeout_s + grace_s,
        )

    async def unpause(self, container_id: str) -> None:
        await self._act("unpause", container_id, "POST", "/unpause")

    async def remove(self, container_id: str) -> None:
        await self._act("remove", container_id, "DELETE", "")

    async def events(self, since: float | None = None) -> AsyncGenerator[str, None]:
        """Names of projects whose containers changed, save by this driver's own actions (see
        `stream`: from `since`, until the stream ends)."""
        filters = {"type": ["container"], **self.label_filter()}
        since = time.time() if since is None else since
        with self._index.follow(since):
            async with contextlib.aclosing(self.stream(filters, since)) as events:
                async for event in events:
                    actor = event.get("Actor") or {}
                    attributes = actor.get("Attributes") or {}
                    project = attributes.get(LABEL_PROJECT)
                    action, container_id = str(event.get("Action", "")), str(actor.get("ID", ""))
                    if project:
                        self._index.saw(action, project, container_id)
                    echo = self._echoes.is_echo(action, container_id, attributes.get("name", ""))
                    if project and not echo:
                        yield project
