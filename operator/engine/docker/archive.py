"""Volume archives for `tether volume export` / `import`, as the API reads and writes them
(`tether.api.archives.VolumeArchives`).

Docker's archive API (`GET` / `PUT /containers/{id}/archive`) reads and writes the files of a
container, started or not: a helper container that mounts the volume at `/VOLUME` is created
(from the project's own image, which is on the host since the project ran: nothing is pulled), is
never started, and is removed afterwards. It carries only the helper label, never the labels of a
project's containers, so no pass ever sees it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import IO, Any

import aiodocker
import aiohttp

from tether.api.archives import CHUNK_BYTES
from tether.api.errors import ArchivesUnavailable, BadArchive
from tether.operator.desired import Volume, volume_name
from tether.operator.engine.docker.driver import DockerDriver
from tether.operator.engine.docker.faults import DockerFault
from tether.operator.labels import LABEL_VOLUME_HELPER


class DockerArchives:
    def __init__(self, driver: DockerDriver) -> None:
        self.driver = driver

    async def close(self) -> None:
        await self.driver.close()

    async def export(self, project: str, volume: str, image: str) -> AsyncGenerator[bytes, None]:
        async with self._helper(project, volume, image, create=False) as helper:
            try:
                async with self.driver.client._query(
                    f"containers/{helper}/archive",
                    method="GET",
                    params={"path": f"/{volume}"},
                    timeout=None,
                ) as response:
                    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                        yield chunk
            except (aiodocker.DockerError, aiohttp.ClientError) as exc:
                raise _unavailable("reading", volume, exc) from exc

    async def import_(
        self, project: str, owner: str, volume: str, image: str, archive: IO[bytes]
    ) -> None:
        await self.driver.create_volume(
            project, owner, Volume(volume, volume_name(self.driver.installation, project, volume))
        )

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := archive.read(CHUNK_BYTES):
                yield chunk

        async with self._helper(project, volume, image, create=True) as helper:
            try:
                async with self.driver.client._query(
                    f"containers/{helper}/archive",
                    method="PUT",
                    params={"path": "/"},
                    data=chunks(),
                    headers={"Content-Type": "application/x-tar"},
                    timeout=None,
                ):
                    pass
            except aiodocker.DockerError as exc:
                if exc.status == 400:
                    raise BadArchive(f"Docker refused the archive: {exc.message}") from exc
                raise _unavailable("writing", volume, exc) from exc
            except aiohttp.ClientError as exc:
                raise _unavailable("writing", volume, exc) from exc

    @contextlib.asynccontextmanager
    async def _helper(
        self, project: str, volume: str, image: str, *, create: bool
    ) -> AsyncIterator[str]:
        """A container (never started) that mounts the project's volume at `/VOLUME`; removed
        afterwards, whatever happened."""
        driver = self.driver
        source = volume_name(driver.installation, project, volume)
        config: dict[str, Any] = {
            "Image": image,
            # Never started; an entrypoint that cannot run makes sure of it.
            "Entrypoint": ["/nonexistent/tether-volume-helper"],
            "Labels": {LABEL_VOLUME_HELPER: driver.installation},
            "HostConfig": {
                "Mounts": [{"Type": "volume", "Source": source, "Target": f"/{volume}"}],
                "NetworkMode": "none",
            },
        }
        if not create and not await driver.volume_exists(source):
            raise BadArchive(
                f"volume {volume!r} of project {project!r} has not been created yet: there is "
                "nothing to export"
            )
        try:
            made = await driver.call(
                "helper create", lambda: driver.client.containers.create(config)
            )
        except (aiodocker.DockerError, DockerFault) as exc:
            raise _unavailable("mounting", volume, exc) from exc
        try:
            yield made.id
        finally:
            with contextlib.suppress(aiodocker.DockerError, DockerFault):
                await driver.call("helper remove", lambda: made.delete(force=True, v=False))


def _unavailable(doing: str, volume: str, exc: BaseException) -> ArchivesUnavailable:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return ArchivesUnavailable(
        f"{doing} volume {volume!r} through Docker failed: {message}",
        hint="check that the API server reaches the Docker engine (TETHER_DOCKER_URL), then retry",
    )
