"""Watching projects: one LISTEN connection per API process, fanned out to every watcher.

The hub listens on `tether_desired` (desired-state writes) and `tether_status` (the operator's
status writes after every pass), which both carry a project name. Each watcher holds a
subscription that collects the names it may care about; its stream reloads those projects with the
watcher's own scope (so that nobody learns of a project they may not see) and sends each view that
changed. Notifications sent while the listener is down are lost: after every (re)connect, each
watcher reloads everything it watches and sends whatever differs from what it sent before.

The listener runs while anybody watches, and stops with the last watcher.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog

from tether.api.errors import TetherError
from tether.api.metrics import API_WATCHERS
from tether.api.models import Principal, WatchView
from tether.api.reconnect import Backoff, Reconnect
from tether.api.sse import KEEPALIVE, cleanup, frame
from tether.api.store import DESIRED_CHANNEL, STATUS_CHANNEL, Store

log = structlog.get_logger("tether.api.watch")
RECENT_EVENTS = 10
RECONNECT = Backoff(first_s=0.5, max_s=10.0)
LISTENER_NAME = "tether-api-watch"  # its application_name in pg_stat_activity


class ShuttingDown(TetherError):
    status_code = 503
    error = "shutting_down"


class Subscription:
    """What one watcher still has to look at: some project names, or everything."""

    def __init__(self, scope: str | None, name: str | None) -> None:
        self.scope = scope
        self.name = name
        self.closed = False
        self._dirty: set[str] = set()
        self._everything = True  # the first look is at everything watched
        self._wake = asyncio.Event()
        self._wake.set()

    def wants(self, name: str) -> bool:
        return self.name is None or self.name == name

    def touch(self, name: str) -> None:
        self._dirty.add(name)
        self._wake.set()

    def touch_all(self) -> None:
        self._everything = True
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def changes(self, within_s: float) -> tuple[bool, set[str]] | None:
        """(everything?, names) to look at, or None if nothing came within `within_s`."""
        try:
            async with asyncio.timeout(max(within_s, 0.0)):
                await self._wake.wait()
        except TimeoutError:
            return None
        self._wake.clear()
        everything, dirty = self._everything, self._dirty
        self._everything, self._dirty = False, set()
        return everything, dirty


class WatchHub:
    def __init__(self, store: Store, *, reconnect: Backoff = RECONNECT) -> None:
        self._store = store
        self._reconnect = Reconnect("watch listener", retry_on=(Exception,), backoff=reconnect)
        self._subscriptions: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.connected = False

    def check_open(self) -> None:
        """Refuse a new watch (503) once shutting down."""
        if self._closed:
            raise ShuttingDown(
                "the API is shutting down", hint="retry shortly, or against another server"
            )

    @asynccontextmanager
    async def subscribe(self, scope: str | None, name: str | None) -> AsyncIterator[Subscription]:
        self.check_open()
        subscription = Subscription(scope, name)
        self._subscriptions.add(subscription)
        API_WATCHERS.inc()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="watch-listener")
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            API_WATCHERS.dec()
            if not self._subscriptions and self._task is not None:
                task, self._task = self._task, None
                task.cancel()
                with cleanup():
                    await asyncio.wait({task})

    def shutdown(self) -> None:
        """End every stream (their clients reconnect elsewhere, or later) and take no more."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription.close()

    def _notified(self, _channel: str, name: str) -> None:
        for subscription in self._subscriptions:
            if subscription.wants(name):
                subscription.touch(name)

    async def _listen(self) -> None:
        # The listener must outlive any failure: each one is logged, and it connects again.
        await self._reconnect.forever(self._listen_once)

    async def _listen_once(self) -> None:
        try:
            async with self._store.listen_channels(
                (DESIRED_CHANNEL, STATUS_CHANNEL),
                self._notified,
                application_name=LISTENER_NAME,
            ) as listener:
                self.connected = True
                self._reconnect.connected()
                # Whatever changed before this connection listened was not notified.
                for subscription in self._subscriptions:
                    subscription.touch_all()
                await listener.wait_closed()
        finally:
            self.connected = False


def _comparable(view: WatchView) -> dict[str, Any]:
    """A view, less what changes on every status write even when nothing else does."""
    return view.model_dump(mode="json", exclude={"status": {"updated_at"}})


async def stream(
    hub: WatchHub,
    store: Store,
    principal: Principal,
    name: str | None,
    *,
    keepalive_s: float,
    events: int = RECENT_EVENTS,
) -> AsyncIterator[bytes]:
    """The server-sent events of one watcher: `view` for each project at once and again on each
    change; `deleted` when a project is gone (which ends a one-project stream); `synced` once
    every project has been sent (watching everything); `error`, which ends the stream, when the
    store fails."""
    sent: dict[str, dict[str, Any]] = {}
    synced = False
    async with hub.subscribe(principal.scope, name) as subscription:
        last_sent = time.monotonic()
        while True:
            change = await subscription.changes(keepalive_s - (time.monotonic() - last_sent))
            if subscription.closed:
                return
            if change is None:
                last_sent = time.monotonic()
                yield KEEPALIVE
                continue
            everything, dirty = change
            wanted: list[str] | None
            if name is not None:
                wanted = [name]
            elif everything:
                wanted = None
            else:
                wanted = sorted(dirty)
            try:
                views = await store.watch_views(principal.scope, wanted, events=events)
            except TetherError as exc:
                yield frame("error", {"error": exc.error, "message": exc.message})
                return
            found = {view.project.name for view in views}
            for view in views:
                shown = _comparable(view)
                if sent.get(view.project.name) != shown:
                    sent[view.project.name] = shown
                    last_sent = time.monotonic()
                    yield frame("view", view)
            looked_at = set(sent) if wanted is None else set(wanted)
            for gone in sorted(looked_at - found):
                if name is None and gone not in sent:
                    continue  # a project this watcher may not see, or never saw
                sent.pop(gone, None)
                yield frame("deleted", {"project": gone})
                if name is not None:
                    return
            if name is None and everything and not synced:
                synced = True
                last_sent = time.monotonic()
                yield frame("synced", {"projects": len(views)})
