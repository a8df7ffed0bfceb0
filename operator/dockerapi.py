"""One Docker API call, as both runtimes' drivers make it: under a cap on calls in flight, after
the lease check, within a deadline, retried on what is worth retrying.

What a call's failure means is the driver's to say: this module only tells a Docker that could
not be reached, or failed (5xx), from one that answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiodocker
import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from tether.operator.metrics import DOCKER_CALLS
from tether.operator.runtime import RuntimeFault

T = TypeVar("T")
CALL_TIMEOUT_S = 30.0
# Swarm answers a write that names a stale service version with a 500 that says so: it is the
# compare-and-swap refusing, not a Docker in trouble, and retrying the same write cannot help.
OUT_OF_SEQUENCE = "update out of sequence"


async def docker_call(
    operation: str,
    call: Callable[[], Awaitable[T]],
    *,
    slots: asyncio.Semaphore,
    guard: Callable[[], None],
    unavailable: Callable[[str, str, int | None], RuntimeFault],
    deadline_s: float = CALL_TIMEOUT_S,
) -> T:
    """`call` under `slots`, each try after `guard()` (which raises once this operator may no
    longer act); Docker unreachable, silent or failing (5xx) is retried, then raised as
    `unavailable(operation, message, status)`; any other answer of Docker's is raised as the
    `aiodocker.DockerError` it is."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(RuntimeFault),
        stop=stop_after_attempt(3),
        wait=wait_exponential_jitter(multiplier=0.1, max=1.0, jitter=0.1),
        reraise=True,
    ):
        with attempt:
            async with slots:
                guard()
                try:
                    async with asyncio.timeout(deadline_s):
                        result = await call()
                except TimeoutError as exc:
                    DOCKER_CALLS.labels(operation, "timeout").inc()
                    raise unavailable(operation, f"no answer in {deadline_s:g} s", None) from exc
                except aiohttp.ClientError as exc:
                    DOCKER_CALLS.labels(operation, "connection").inc()
                    raise unavailable(operation, str(exc) or type(exc).__name__, None) from exc
                except aiodocker.DockerError as exc:
                    DOCKER_CALLS.labels(operation, str(exc.status)).inc()
                    # aiodocker reports a lost connection as 900
                    if exc.status >= 500 and OUT_OF_SEQUENCE not in str(exc.message):
                        raise unavailable(operation, exc.message, exc.status) from exc
                    raise
                DOCKER_CALLS.labels(operation, "ok").inc()
                return result
    raise AssertionError("unreachable: tenacity re-raises the last attempt's error")
