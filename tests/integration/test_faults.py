"""The fault-injecting Docker proxy itself (tests/faultproxy.py), driven with aiodocker against the
real engine: it forwards everything faithfully (streams and hijacked connections included), each
fault does exactly what it says for exactly the calls it was told, and the calls are recorded."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import aiohttp
import pytest
from faultproxy import (
    CREATE,
    EVENTS,
    INSPECT,
    LIST,
    NOT_MODIFIED,
    REMOVE,
    START,
    STOP,
    Cut,
    Delay,
    Drop,
    FaultProxy,
    Stale,
    already_running,
    server_error,
)
from support import remove_containers, wait_for

from tether.operator.labels import LABEL_INSTALLATION, LABEL_PROJECT

pytestmark = pytest.mark.docker

WORKLOAD = "tether-test/workload:latest"


@pytest.fixture
async def installation(direct: aiodocker.Docker) -> AsyncIterator[str]:
    """Labels this test's containers, which are removed afterwards."""
    installation = f"test-{uuid.uuid4().hex[:8]}"
    yield installation
    await remove_containers(direct, installation)


@pytest.fixture
async def proxied(docker_proxy: FaultProxy) -> AsyncIterator[aiodocker.Docker]:
    """The engine through the proxy."""
    docker = aiodocker.Docker(url=docker_proxy.url)
    yield docker
    await docker.close()


async def create(
    docker: aiodocker.Docker, installation: str, project: str = "shop", **config: Any
) -> aiodocker.containers.DockerContainer:
    labels = {LABEL_INSTALLATION: installation, LABEL_PROJECT: project}
    return await docker.containers.create(
        {"Image": WORKLOAD, "Labels": labels, "StopTimeout": 1, **config},
        name=f"tether-{installation}-{project}-{uuid.uuid4().hex[:6]}",
    )


async def state(direct: aiodocker.Docker, container_id: str) -> str:
    status: str = (await direct.containers.container(container_id).show())["State"]["Status"]
    return status


async def test_forwards_a_container_lifecycle_and_records_every_call(
    docker_proxy: FaultProxy, proxied: aiodocker.Docker, direct: aiodocker.Docker, installation: str
) -> None:
    container = await create(proxied, installation)
    await container.start()
    shown = await proxied.containers.container(container.id).show()
    assert shown["State"]["Running"]
    truth = await direct.containers.container(container.id).show()
    assert (shown["Id"], shown["Config"], shown["Name"]) == (
        truth["Id"],
        truth["Config"],
        truth["Name"],
    )
    listed = await proxied.containers.list(
        all=True,
        filters={"label": [f"{LABEL_INSTALLATION}={installation}", f"{LABEL_PROJECT}=shop"]},
    )
    assert [c.id for c in listed] == [container.id]
    await container.stop(t=1)
    await container.delete()
    assert (
        await direct.containers.list(
            all=True, filters={"label": [f"{LABEL_INSTALLATION}={installation}"]}
        )
        == []
    )

    seen = [(c.endpoint, c.project, c.status) for c in docker_proxy.calls if c.endpoint]
    assert seen == [
        (CREATE, "shop", 201),
        (START, "shop", 204),
        (INSPECT, "shop", 200),
        (LIST, "shop", 200),
        (STOP, "shop", 204),
        (REMOVE, "shop", 204),
    ]
    assert all(c.fault is None for c in docker_proxy.calls)


async def test_start_refused_as_already_running_for_the_next_calls_only(
    docker_proxy: FaultProxy, proxied: aiodocker.Docker, direct: aiodocker.Docker, installation: str
) -> None:
    container = await create(proxied, installation)
    other = await create(proxied, installation, project="other")
    rule = docker_proxy.inject(START, already_running(), times=2, project="shop")

    await other.start()  # another project: untouched by the rule
    for _ in range(2):
        with pytest.raises(aiodocker.DockerError) as refused:
            await container.start()
        assert refused.value.status == 409
        assert refused.value.message == "container already running"
        assert await state(direct, container.id) == "created"  # never forwarded
    await container.start()
    assert await state(direct, container.id) == "running"

    assert rule.hits == 2
    assert not rule.active
    starts = docker_proxy.calls_to(START, project="shop")
    assert [(c.fault, c.status) for c in starts] == [
        ("respond 409", 409),
        ("respond 409", 409),
        (None, 204),
    ]


async def test_a_rule_for_one_container_leaves_the_others_alone(
    docker_proxy: FaultProxy, proxied: aiodocker.Docker, direct: aiodocker.Docker, installation: str
) -> None:
    wedged = await create(proxied, installation)
    sibling = await create(proxied, installation)  # same project, another container
    rule = docker_proxy.inject(START, server_error(500), container=wedged.id)
    await sibling.start()
    with pytest.raises(aiodocker.DockerError) as failed:
        await wedged.start()
    assert failed.value.status == 500
    assert (await state(direct, sibling.id), await state(direct, wedged.id)) == (
        "running",
        "created",
    )
    assert rule.hits == 1
    assert rule.active  # until cleared


async def test_not_modified_is_answered_without_forwarding(
    docker_proxy: FaultProxy, proxied: aiodocker.Docker, direct: aiodocker.Docker, installation: str
) -> None:
    container = await create(proxied, installation)
    await container.start()
    docker_proxy.inject(STOP, NOT_MODIFIED, times=1)
    await container.stop(t=1)  # aiodocker takes a 304 for success
    assert await state(direct, container.id) == "running"
    assert docker_proxy.calls_to(STOP)[-1].status == 304


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_until_cleared(
    status: int, docker_proxy: FaultProxy, proxied: aiodocker.Docker
) -> None:
    rule = docker_proxy.inject(LIST, server_error(status))
    for _ in range(3):
        with pytest.raises(aiodocker.DockerError) as failed:
            await proxied.containers.list()
        assert failed.value.status == status
    docker_proxy.clear(rule)
    await proxied.containers.list()
    assert [c.status for c in docker_proxy.calls_to(LIST)] == [status] * 3 + [200]


async def test_delay_holds_the_call_and_the_engine_still_carries_it_out(
    docker_proxy: FaultProxy, proxied: aiodocker.Docker, direct: aiodocker.Docker, installation: str
) -> None:
    container = await create(proxied, installation)
    docker_proxy.inject(INSPECT, Delay(0.5), times=1)
    began = time.monotonic()
    shown = await container.show()
    assert time.monotonic() - began >= 0.5
    assert shown["Id"] == container.id

    # A client that gives up before the answer: the start still happens, late.
    docker_proxy.inject(START, Delay(0.5), times=1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await container.start()
    assert await state(direct, container.id) == "created"
    await wait_for(lambda: state_is(direct, container.id, "running"), "the late start")


async def test_drop_closes_the_connection_before_or_after_the_engine_acts(
    docker_proxy: FaultProxy, proxied: aiodocker.Docker, direct: aiodocker.Docker, installation: str
) -> None:
    docker_proxy.inject(CREATE, Drop(), times=1)
    with pytest.raises(aiodocker.DockerError) as dropped:
        await create(proxied, installation)
    assert dropped.value.status == 900  # aiodocker's code for a lost connection
    assert (
        await direct.containers.list(
            all=True, filters={"label": [f"{LABEL_INSTALLATION}={installation}"]}
        )
        == []
    )

    container = await create(proxied, installation)
    docker_proxy.inject(START, Drop(after_forward=True), times=1)
    with pytest.raises(aiodocker.DockerError) as lost:
        await container.start()
    assert lost.value.status == 900
    assert await state(direct, container.id) == "running"  # done, though never acknowledged
    assert [c.fault for c in docker_proxy.calls_to(START)] == ["drop after forwarding"]


async def test_stale_inspect_answers_what_was_recorded_before(
    docker_proxy: FaultProxy, proxied: aiodocker.Docker, installation: str
) -> None:
    container = await create(proxied, installation)
    assert (await container.show())["State"]["Status"] == "created"
    rule = docker_proxy.inject(INSPECT, Stale(), times=2)
    await container.start()
    assert (await container.show())["State"]["Status"] == "created"
    assert (await container.show())["State"]["Status"] == "created"
    assert (await container.show())["State"]["Status"] == "running"
    assert rule.hits == 2
    # A container never inspected before the rule has no stale body: forwarded, not counted.
    fresh = await create(proxied, installation, project="fresh")
    stale_for_all = docker_proxy.inject(INSPECT, Stale())
    assert (await fresh.show())["State"]["Status"] == "created"
    assert stale_for_all.hits == 0


async def test_events_are_relayed_as_they_happen_and_the_stream_can_be_cut(
    docker_proxy: FaultProxy, proxied: aiodocker.Docker, installation: str
) -> None:
    subscriber = proxied.events.subscribe(
        filters={"type": ["container"], "label": [f"{LABEL_INSTALLATION}={installation}"]}
    )
    try:
        await wait_for(lambda: stream_count(docker_proxy, 1), "the events stream open")
        container = await create(proxied, installation)
        async with asyncio.timeout(10):
            event = await subscriber.get()
        assert event is not None
        assert event["Action"] == "create"
        assert event["Actor"]["ID"] == container.id

        assert docker_proxy.cut_event_streams() == 1
        async with asyncio.timeout(10):
            assert await subscriber.get() is None  # the stream ended, as on a daemon restart
        assert docker_proxy.open_streams == 0
    finally:
        await proxied.events.stop()


@pytest.mark.parametrize("clean", [True, False], ids=["clean-end", "dropped"])
async def test_a_cut_rule_ends_the_next_events_stream(
    clean: bool, docker_proxy: FaultProxy, proxied: aiodocker.Docker, installation: str
) -> None:
    docker_proxy.inject(EVENTS, Cut(after_s=0.2, clean=clean), times=1)
    subscriber = proxied.events.subscribe(
        filters={"label": [f"{LABEL_INSTALLATION}={installation}"]}
    )
    try:
        async with asyncio.timeout(10):
            assert await subscriber.get() is None
    finally:
        # aiodocker re-raises what ended the stream: the dropped connection.
        with contextlib.suppress(aiohttp.ClientPayloadError):
            await proxied.events.stop()
    [call] = docker_proxy.calls_to(EVENTS)
    assert (call.fault, call.status) == ("cut after 0.2 s", 200)


async def test_followed_logs_stream_through_as_they_are_written(
    proxied: aiodocker.Docker, installation: str
) -> None:
    container = await create(
        proxied, installation, Cmd=["sh", "-c", "echo one; sleep 0.5; echo two"]
    )
    await container.start()
    seen: list[tuple[str, float]] = []
    async with asyncio.timeout(10):
        async for line in container.log(stdout=True, follow=True):
            seen.append((line.strip(), time.monotonic()))
    assert [line for line, _ in seen] == ["one", "two"]
    # Relayed chunk by chunk, not buffered until the stream ends.
    assert seen[1][1] - seen[0][1] >= 0.3


async def test_hijacked_exec_passes_through(proxied: aiodocker.Docker, installation: str) -> None:
    container = await create(proxied, installation)
    await container.start()
    run = await container.exec(["sh", "-c", "echo hijacked"], stdout=True)
    async with run.start(detach=False) as stream:
        async with asyncio.timeout(10):
            message = await stream.read_out()
    assert message is not None
    assert message.data == b"hijacked\n"


async def stream_count(proxy: FaultProxy, count: int) -> bool:
    return proxy.open_streams == count


async def state_is(direct: aiodocker.Docker, container_id: str, expected: str) -> bool:
    return await state(direct, container_id) == expected
