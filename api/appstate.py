"""What one API app holds (on `app.state`), and the typed dependencies through which routes read it.

`create_app` writes it once with `set_state`; nothing else writes it. `store`, `watches` and
`auth_limiter` are read by name from outside too (`app.state.watches.shutdown()` at a stop)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from tether.api.archives import VolumeArchives
from tether.api.logs import LogSource
from tether.api.probes import ReadinessCheck
from tether.api.ratelimit import FailureLimiter
from tether.api.store import Store
from tether.api.watch import WatchHub


@dataclass(frozen=True)
class Streams:
    """How the streaming routes read: container output from `log_source` (none: the logs route
    answers 503), and a keep-alive comment after `keepalive_s` of silence."""

    log_source: LogSource | None
    keepalive_s: float
    # Volume exports and imports (none: their routes answer 503), and their size limit.
    archives: VolumeArchives | None = None
    archive_limit: int = 1024**3


def set_state(
    app: FastAPI,
    store: Store,
    *,
    streams: Streams,
    auth_limiter: FailureLimiter | None,
    readiness: Sequence[ReadinessCheck],
) -> None:
    app.state.store = store
    app.state.auth_limiter = auth_limiter
    app.state.watches = WatchHub(store)
    app.state.streams = streams
    app.state.readiness = tuple(readiness)


# Async on purpose: FastAPI runs a plain `def` dependency in a worker thread.
async def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def _watches(request: Request) -> WatchHub:
    watches: WatchHub = request.app.state.watches
    return watches


async def _streams(request: Request) -> Streams:
    streams: Streams = request.app.state.streams
    return streams


async def _auth_limiter(request: Request) -> FailureLimiter | None:
    limiter: FailureLimiter | None = request.app.state.auth_limiter
    return limiter


async def _readiness(request: Request) -> tuple[ReadinessCheck, ...]:
    checks: tuple[ReadinessCheck, ...] = request.app.state.readiness
    return checks


# Module level on purpose: with postponed annotations FastAPI resolves a route's annotations in
# its module's globals, so an alias local to a function would silently become a query parameter.
StoreDep = Annotated[Store, Depends(_store)]
WatchesDep = Annotated[WatchHub, Depends(_watches)]
StreamsDep = Annotated[Streams, Depends(_streams)]
AuthLimiterDep = Annotated[FailureLimiter | None, Depends(_auth_limiter)]
ReadinessDep = Annotated[tuple[ReadinessCheck, ...], Depends(_readiness)]
