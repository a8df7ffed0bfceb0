"""The Postgres container `tether up` runs when no database is given."""

from __future__ import annotations

from dataclasses import dataclass

import aiodocker

from tether.operator.engine.docker.faults import ImageNotFound


@dataclass(frozen=True)
class PostgresServer:
    """The Postgres container `tether up` runs: reused when it exists, its data in a volume."""

    image: str
    name: str = "tether-postgres"
    volume: str = "tether-pgdata"
    host_port: int = 5433
    password: str = "tether"

    @property
    def dsn(self) -> str:
        return f"postgresql://tether:{self.password}@127.0.0.1:{self.host_port}/tether"


async def ensure_postgres(docker_url: str, server: PostgresServer) -> None:
    """Start the Postgres container, creating it (and its volume) the first time."""
    docker = aiodocker.Docker(url=docker_url)
    try:
        try:
            container = await docker.containers.get(server.name)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
            try:
                await docker.images.inspect(server.image)
            except aiodocker.DockerError as missing:
                raise ImageNotFound(
                    "postgres",
                    f"image {server.image!r} is not on this Docker host and cannot be pulled "
                    "here; build it (scripts/provision) or set TETHER_POSTGRES_IMAGE",
                    missing.status,
                ) from missing
            container = await docker.containers.create(
                {
                    "Image": server.image,
                    "Env": [
                        "POSTGRES_USER=tether",
                        f"POSTGRES_PASSWORD={server.password}",
                        "POSTGRES_DB=tether",
                    ],
                    "Labels": {"dev.tether.role": "postgres"},
                    "ExposedPorts": {"5432/tcp": {}},
                    "HostConfig": {
                        "Binds": [f"{server.volume}:/var/lib/postgresql/data"],
                        "PortBindings": {
                            "5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(server.host_port)}]
                        },
                        "RestartPolicy": {"Name": "no"},
                    },
                },
                name=server.name,
            )
        await container.start()
    finally:
        await docker.close()


async def stop_postgres(docker_url: str, server: PostgresServer) -> None:
    docker = aiodocker.Docker(url=docker_url)
    try:
        await docker.containers.container(server.name).stop(t=30)
    finally:
        await docker.close()
