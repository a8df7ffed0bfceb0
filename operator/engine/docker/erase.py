"""The one way tether deletes data: removing a project's volumes, for a deletion that asked for it.

Kept apart from the driver on purpose: no planner step and no driver method removes a volume, so
no pass, retry, rollback, crash loop, drift repair or orphan clean-up can reach this. Only the
reconciler calls it (through `Runtime.delete_volumes`), once the project's containers are gone
and its deletion asked for its volumes (`tether destroy NAME --delete-volumes`).
"""

from __future__ import annotations

import aiodocker

from tether.operator.engine.docker.driver import DockerDriver
from tether.operator.engine.docker.faults import DockerFault


async def erase_volumes(driver: DockerDriver, project: str) -> list[str]:
    """Remove the project's volumes (those labelled as this installation's and the project's);
    returns the steps taken. Raises `DockerFault` while one stays (in use, or Docker failing):
    the deletion is then retried, the project kept until they are gone."""
    if await driver.observe(project):
        raise DockerFault(
            "volume remove", f"project {project!r} still has containers: its volumes stay"
        )
    removed = []
    for volume in await driver.volumes(project):
        name = volume.docker_name

        async def remove(path: str = f"volumes/{name}") -> object:
            return await driver.client._query_json(path, method="DELETE")

        try:
            await driver.call("volume remove", remove)
        except aiodocker.DockerError as exc:
            if exc.status != 404:  # gone already is what was asked
                raise DockerFault("volume remove", f"{name}: {exc.message}", exc.status) from exc
        removed.append(f"remove volume {volume.name}")
    left = await driver.volumes(project)
    if left:
        raise DockerFault(
            "volume remove",
            f"Docker still lists {', '.join(v.docker_name for v in left)} after removing it",
        )
    return removed
