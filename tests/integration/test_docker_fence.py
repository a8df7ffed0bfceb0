"""The lease check before a Docker request is made again once the request holds its connection,
right before its first bytes are written. A lease lost in between (an operator paused while
connecting, then continued after a standby took over) stops the request before any of it
reaches Docker (docs/faults.md, high availability)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import aiodocker
import pytest
from faultproxy import LIST, FaultProxy
from support import wait_for

from tether.api.settings import Settings
from tether.operator.engine.docker.driver import DockerDriver
from tether.operator.runtime import LostLease
from tether.operator.runtimes import engine_runtime

WORKLOAD = "tether-test/workload:latest"


def lease_lost_after(checks: int) -> Callable[[], None]:
    """A guard whose first `checks` checks find the lease held, and every later one lost."""
    passed = 0

    def guard() -> None:
        nonlocal passed
        if passed >= checks:
            raise LostLease("the lease moved on while the request was connecting")
        passed += 1

    return guard


def listing(driver: DockerDriver) -> Awaitable[object]:
    """A request without a body: its headers are its first bytes."""
    return driver.call("list", lambda: driver.client.containers.list(all=True))


def creating(driver: DockerDriver) -> Awaitable[object]:
    """A request with a body, which aiohttp writes with the headers, from a task of its own."""
    name = f"tether-test-fence-{uuid.uuid4().hex[:8]}"
    config = {"Image": WORKLOAD, "Labels": {"tether.test": "fence"}}
    return driver.call(
        "create", lambda: driver.client.containers.create(config, name=name), change=True
    )


@pytest.mark.parametrize(
    ("request_of", "held_checks"),
    # The list: the check before the connection passes, the one at its headers fails. The
    # create: that one passes too (Python 3.11 writes a body a loop turn later), the one at its
    # body's first write fails.
    [(listing, 1), (creating, 2)],
    ids=["without-body", "with-body"],
)
@pytest.mark.parametrize("warm", [False, True], ids=["new-connection", "pooled-connection"])
async def test_a_lease_lost_while_a_request_connects_sends_nothing_to_docker(
    docker_proxy: FaultProxy,
    warm: bool,
    request_of: Callable[[DockerDriver], Awaitable[object]],
    held_checks: int,
) -> None:
    settings = Settings(docker_url=docker_proxy.url, installation_id=f"test-{uuid.uuid4().hex[:8]}")
    driver = engine_runtime(settings, guard=lambda: None).driver
    try:
        if warm:  # a request that went through leaves its connection in the pool
            await listing(driver)
        else:  # known already: aiodocker asks for it before a client's first request otherwise
            async with aiodocker.Docker() as engine:
                driver.client.api_version = "v" + (await engine.version())["ApiVersion"]
        accepted, sent = docker_proxy.accepted, len(docker_proxy.calls)
        driver.guard = lease_lost_after(held_checks)
        with pytest.raises(LostLease):
            await request_of(driver)
        assert docker_proxy.calls[sent:] == []
        if not warm:  # the last check came once the connection was open, not before

            async def connected() -> bool:
                return docker_proxy.accepted > accepted

            await wait_for(connected, "the request's connection accepted")
        # The same client goes on once the lease is back.
        driver.guard = lambda: None
        lists = len(docker_proxy.calls_to(LIST))
        await listing(driver)
        assert len(docker_proxy.calls_to(LIST)) == lists + 1
    finally:
        await driver.close()
