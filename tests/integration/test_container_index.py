"""The Docker driver's container index against the real engine (through the fault proxy, which
records every call): while Docker's events are followed after a list, a pass's look at its project
inspects the containers the index knows and lists nothing; containers created and removed by
someone else are seen all the same; without the events, it lists again."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import aiodocker
import pytest
from faultproxy import INSPECT, LIST, FaultProxy
from support import remove_containers, wait_for

from tether.operator.engine.docker.driver import DockerDriver
from tether.operator.labels import LABEL_INSTALLATION, LABEL_PROJECT

WORKLOAD = "tether-test/workload:latest"


@pytest.fixture
async def driver(docker_proxy: FaultProxy, direct: aiodocker.Docker) -> AsyncIterator[DockerDriver]:
    installation = f"test-{uuid.uuid4().hex[:8]}"
    driver = DockerDriver(docker_proxy.url, installation)
    yield driver
    await driver.close()
    await remove_containers(direct, installation)


@contextlib.asynccontextmanager
async def following(driver: DockerDriver, docker_proxy: FaultProxy) -> AsyncIterator[None]:
    """Docker's events followed from before a list of every container, as after a resync."""
    since = time.time()
    await driver.list_all()
    events = driver.events(since)

    async def drain() -> None:
        async for _ in events:
            pass

    task = asyncio.create_task(drain())

    async def subscribed() -> bool:
        return docker_proxy.open_streams == 1

    try:
        await wait_for(subscribed, "the events stream")
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await events.aclose()


async def from_outside(direct: aiodocker.Docker, installation: str, project: str) -> str:
    labels = {LABEL_INSTALLATION: installation, LABEL_PROJECT: project}
    created = await direct.containers.create(
        {"Image": WORKLOAD, "Labels": labels}, name=f"tether-{installation}-{project}-outside"
    )
    return str(created.id)


async def observed_ids(driver: DockerDriver, project: str) -> set[str]:
    return {c.id for c in await driver.observe(project)}


async def test_a_look_at_a_project_inspects_what_the_index_knows_and_lists_nothing(
    driver: DockerDriver, docker_proxy: FaultProxy, direct: aiodocker.Docker
) -> None:
    before = await from_outside(direct, driver.installation, "shop")
    async with following(driver, docker_proxy):
        began = time.monotonic()  # as the proxy records its calls
        assert await observed_ids(driver, "shop") == {before}
        assert await observed_ids(driver, "cart") == set()

        # Created and removed by someone else: the events tell.
        later = await from_outside(direct, driver.installation, "cart")

        async def sees(ids: set[str]) -> bool:
            return await observed_ids(driver, "cart") == ids

        await wait_for(lambda: sees({later}), "the container created outside")
        await direct.containers.container(later).delete(force=True)
        await wait_for(lambda: sees(set()), "the container removed outside gone")

        assert docker_proxy.calls_to(LIST, since=began) == []
        assert docker_proxy.calls_to(INSPECT, since=began)  # the looks went to Docker

    # The events no longer followed: a look lists again.
    listed = time.monotonic()
    assert await observed_ids(driver, "shop") == {before}
    assert len(docker_proxy.calls_to(LIST, since=listed)) == 1


async def test_a_container_removed_unseen_is_dropped_at_its_inspect(
    driver: DockerDriver, docker_proxy: FaultProxy, direct: aiodocker.Docker
) -> None:
    """Just removed: not reported, whether its destroy event came first or the inspect of a
    container the index still knew found it gone."""
    gone = await from_outside(direct, driver.installation, "shop")
    async with following(driver, docker_proxy):
        await direct.containers.container(gone).delete(force=True)
        assert await observed_ids(driver, "shop") == set()
