"""TETHER_DOCKER_CHANGES: container changes reach Docker at most that many at once, and the
looks around them (lists, inspects) never wait for a change slot."""

from __future__ import annotations

import asyncio
import uuid

from faultproxy import STOP, Delay, FaultProxy
from support import wait_for

from tether.api.settings import Settings
from tether.operator.engine.docker.faults import DockerRefused
from tether.operator.runtimes import engine_runtime

HELD_S = 3.0


async def test_changes_are_capped_and_reads_pass_them(docker_proxy: FaultProxy) -> None:
    settings = Settings(
        docker_url=docker_proxy.url,
        installation_id=f"test-{uuid.uuid4().hex[:8]}",
        docker_changes=2,
    )
    runtime = engine_runtime(settings)
    driver = runtime.driver
    docker_proxy.inject(STOP, Delay(HELD_S), times=2)  # the first two stops are held
    # Six stops of containers that do not exist: Docker refuses each (404) once it gets it.
    stops = [
        asyncio.create_task(driver.stop(f"tether-absent-{uuid.uuid4().hex[:12]}", 0))
        for _ in range(6)
    ]
    try:

        def stops_received() -> list[float]:
            return [c.at for c in docker_proxy.calls if c.endpoint == STOP]

        async def two_held() -> bool:
            return len(stops_received()) >= 2

        await wait_for(two_held, "the first two stops to reach Docker")
        await driver.list_all()  # a read, while both change slots are taken
        assert not any(s.done() for s in stops), "the held stops answered before the read"
        assert len(stops_received()) == 2, "a third change reached Docker past the cap of 2"

        for outcome in await asyncio.gather(*stops, return_exceptions=True):
            assert isinstance(outcome, DockerRefused), outcome
        arrivals = sorted(stops_received())
        assert len(arrivals) == 6
        # The third change waited for a slot: it reached Docker only once a held one answered.
        assert arrivals[2] - arrivals[0] >= HELD_S
    finally:
        for stop in stops:
            stop.cancel()
        await driver.close()
