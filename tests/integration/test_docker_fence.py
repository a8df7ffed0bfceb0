"""The lease check before a Docker request is made twice: before the request takes a connection,
and once the connection is ready, right before the request is written. A lease lost in between
(an operator paused while connecting, then continued after a standby took over) stops the request
before any of it reaches Docker (docs/faults.md, high availability)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from faultproxy import LIST, FaultProxy

from tether.api.settings import Settings
from tether.operator.runtime import LostLease
from tether.operator.runtimes import engine_runtime


def lease_lost_after(checks: int) -> Callable[[], None]:
    """A guard whose first `checks` checks find the lease held, and every later one lost."""
    passed = 0

    def guard() -> None:
        nonlocal passed
        if passed >= checks:
            raise LostLease("the lease moved on while the request was connecting")
        passed += 1

    return guard


@pytest.mark.parametrize("warm", [False, True], ids=["new-connection", "pooled-connection"])
async def test_a_lease_lost_while_a_request_connects_sends_nothing_to_docker(
    docker_proxy: FaultProxy, warm: bool
) -> None:
    settings = Settings(docker_url=docker_proxy.url, installation_id=f"test-{uuid.uuid4().hex[:8]}")
    driver = engine_runtime(settings, guard=lambda: None).driver

    async def listed() -> object:
        return await driver.call("list", lambda: driver.client.containers.list(all=True))

    try:
        if warm:  # a request that went through leaves its connection in the pool
            await listed()
        sent = len(docker_proxy.calls)
        # The check before the request takes a connection passes; the one once it has it fails.
        driver.guard = lease_lost_after(1)
        with pytest.raises(LostLease):
            await listed()
        assert docker_proxy.calls[sent:] == []
        # The same client goes on once the lease is back.
        driver.guard = lambda: None
        lists = len(docker_proxy.calls_to(LIST))
        await listed()
        assert len(docker_proxy.calls_to(LIST)) == lists + 1
    finally:
        await driver.close()
