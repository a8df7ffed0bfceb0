"""TETHER_DOCKER_TIMEOUT_S: a Docker call that does not answer in time is a transient fault
(retried, then reported as unavailable) after the configured time, not a fixed 30 s."""

from __future__ import annotations

import uuid

import pytest
from faultproxy import LIST, Delay, FaultProxy

from tether.api.settings import Settings
from tether.operator.engine.docker.faults import DockerUnavailable
from tether.operator.runtimes import engine_runtime


async def test_the_docker_call_timeout_is_the_setting(docker_proxy: FaultProxy) -> None:
    settings = Settings(
        docker_url=docker_proxy.url,
        installation_id=f"test-{uuid.uuid4().hex[:8]}",
        docker_timeout_s=0.3,
    )
    runtime = engine_runtime(settings)
    try:
        assert runtime.driver.call_timeout_s == 0.3
        await runtime.driver.list_all()  # answers in time: nothing to report
        rule = docker_proxy.inject(LIST, Delay(5.0), times=3)  # each of the 3 attempts
        with pytest.raises(DockerUnavailable, match=r"no answer in 0\.3 s"):
            await runtime.driver.list_all()
        assert rule.hits == 3
    finally:
        await runtime.driver.close()
