"""One Docker API call, as both runtimes' drivers make it: under a cap on calls in flight, after
the lease check, within a deadline, retried on what is worth retrying; and `DockerCalls`, what
both drivers hold to make them (the client, the lease check, the deadline, the two caps).

What a call's failure means is the driver's to say: this module only tells a Docker that could
not be reached, or failed (5xx), from one that answered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any, ClassVar, TypedDict, TypeVar

import aiodocker
import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from tether.operator.labels import LABEL_INSTALLATION, LABEL_PROJECT
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


class DockerOptions(TypedDict, total=False):
    """How a driver makes its calls, as `DockerCalls` takes them (each one defaulted)."""

    concurrency: int  # looks in flight at once (TETHER_DOCKER_CONCURRENCY)
    changes: int  # changes in flight at once (TETHER_DOCKER_CHANGES)
    guard: Callable[[], None] | None
    call_timeout_s: float  # each attempt of a call (TETHER_DOCKER_TIMEOUT_S)


class DockerCalls:
    """A driver's way to one Docker API, for one installation: each driver is one, and says
    what its calls mean (`unavailable`: its fault for a Docker it could not reach)."""

    unavailable: ClassVar[type[RuntimeFault]]

    def __init__(
        self,
        url: str,
        installation: str,
        *,
        concurrency: int = 16,
        changes: int = 8,
        guard: Callable[[], None] | None = None,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self.client = self._open_client(url)
        # How long one Docker API call may take before it counts as a transient fault
        # (TETHER_DOCKER_TIMEOUT_S); a container's stop adds its grace period.
        self.call_timeout_s = call_timeout_s
        self.url = url
        self.installation = installation
        # Called before every request (each retry too): the operator's lease check, which raises
        # (LostLease) once this operator may no longer act.
        self.guard = guard or (lambda: None)
        self._looks = asyncio.Semaphore(concurrency)
        # Changes (a container's create, start, stop, unpause, remove; a service's create,
        # update, remove) are what costs the engine; they have a cap of their own, so that the
        # workers' looks and records around them (under `_looks`) never keep a change slot idle
        # (docs/benchmarks.md, item 2).
        self._changes = asyncio.Semaphore(changes)

    def _open_client(self, url: str) -> aiodocker.Docker:
        """aiodocker (which makes the connector the URL needs: a socket, TCP, TLS from
        DOCKER_TLS_VERIFY), its session tracing each request for a second lease check just
        before the request's first bytes are written.

        `docker_call`'s check comes before a connection is taken, and taking one may wait (the
        pool, a connect): an operator paused there (SIGSTOP, a stalled VM) would send its request
        on waking, after a standby took over. aiohttp signals "headers sent" once it holds the
        connection, before it buffers them, and "chunk sent" before a body's first write, which
        also writes the headers (from a task of its own on Python 3.11, a loop turn later). After
        the last check only synchronous code remains. Docker takes no fencing token: no client can
        close that last window (docs/faults.md, high availability)."""
        client = aiodocker.Docker(url=url)
        fence = aiohttp.TraceConfig()
        fence.on_request_headers_sent.append(self._check_lease_before_sending)
        fence.on_request_chunk_sent.append(self._check_lease_before_sending)
        fence.freeze()
        # The session's tracing is a list aiohttp reads at each request; aiodocker makes the
        # session without a way to pass one in.
        client.session.trace_configs.append(fence)
        return client

    async def _check_lease_before_sending(
        self, session: aiohttp.ClientSession, context: SimpleNamespace, params: object
    ) -> None:
        # Once per request: a body's later chunks follow bytes already sent. A LostLease before
        # the headers closes the connection unwritten; before the body's first write, aiohttp
        # reports it as a failed connection, which the retry turns into LostLease.
        if getattr(context, "checked_chunk", False):
            return
        if isinstance(params, aiohttp.TraceRequestChunkSentParams):
            context.checked_chunk = True
        self.guard()

    async def close(self) -> None:
        await self.client.close()

    def label_filter(self, project: str | None = None) -> dict[str, list[str]]:
        """Docker's filter for this installation's objects (of one project, if named)."""
        labels = [f"{LABEL_INSTALLATION}={self.installation}"]
        if project is not None:
            labels.append(f"{LABEL_PROJECT}={project}")
        return {"label": labels}

    async def call(
        self,
        operation: str,
        call: Callable[[], Awaitable[T]],
        *,
        deadline_s: float | None = None,
        change: bool = False,
    ) -> T:
        """One Docker API call under the cap of its kind (`change`: of what runs), retried on
        transient faults; each attempt may take `deadline_s` (default: `call_timeout_s`)."""
        return await docker_call(
            operation,
            call,
            slots=self._changes if change else self._looks,
            guard=self.guard,
            unavailable=self.unavailable,
            deadline_s=self.call_timeout_s if deadline_s is None else deadline_s,
        )

    async def stream(
        self, filters: dict[str, list[str]], since: float | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Docker's events that `filters` let through, until the stream ends; with `since` (a
        Unix time), Docker first replays what happened from then on. Close it (`aclosing`) to
        end the subscription.

        The stream ends silently when Docker goes away and drops events for slow readers: the
        caller reconnects and resyncs.
        """
        params: dict[str, Any] = {"filters": filters}
        if since is not None:
            params["since"] = f"{since:.9f}"
        self.guard()
        # aiodocker's events API carries no type annotations.
        subscriber = self.client.events.subscribe(**params)  # type: ignore[no-untyped-call]
        try:
            while True:
                event = await subscriber.get()
                if event is None:
                    return
                yield event
        finally:
            # Stopping re-raises whatever ended the stream's task (Docker gone): already handled.
            with contextlib.suppress(aiodocker.DockerError, aiohttp.ClientError, OSError):
                await self.client.events.stop()  # type: ignore[no-untyped-call]
