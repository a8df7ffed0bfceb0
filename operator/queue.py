"""The work queue: one entry per project, one pass per project at a time.

A project is queued at most once; one marked dirty while its pass runs is queued again when the pass
ends. A project in backoff is not run before its time by ordinary triggers; a desired change
(`urgent`) lifts the backoff. A project queued `first` (a starting endpoint looked at again: a short
pass) goes ahead of the others.
"""

from __future__ import annotations

import asyncio
import itertools
import time


class WorkQueue:
    def __init__(self) -> None:
        # (0 for `first`, else 1; arrival): a name queued again `first` has a second entry, and
        # whichever comes out first serves it (the other is skipped: no longer in `_queued`).
        self._ready: asyncio.PriorityQueue[tuple[int, int, str]] = asyncio.PriorityQueue()
        self._arrivals = itertools.count()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._dirty: set[str] = set()
        self._not_before: dict[str, float] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, name: str, *, urgent: bool = False, first: bool = False) -> None:
        if urgent:
            self._not_before.pop(name, None)
        due = self._not_before.get(name)
        if due is not None and due > time.monotonic():
            self._schedule(name, due)
            return
        if name in self._active:
            self._dirty.add(name)
        elif name not in self._queued or first:
            self._queued.add(name)
            self._ready.put_nowait((0 if first else 1, next(self._arrivals), name))

    def add_after(self, name: str, delay_s: float, *, backoff: bool = False) -> None:
        """Run `name` again after `delay_s`; with `backoff`, nothing but an urgent add runs it
        earlier."""
        due = time.monotonic() + max(delay_s, 0.0)
        if backoff:
            self._not_before[name] = due
        self._schedule(name, due)

    def _schedule(self, name: str, due: float) -> None:
        existing = self._timers.get(name)
        if existing is not None:
            if existing.when() <= due + _loop_offset():
                return
            existing.cancel()
        loop = asyncio.get_running_loop()
        self._timers[name] = loop.call_at(due + _loop_offset(), self._fire, name)

    def _fire(self, name: str) -> None:
        self._timers.pop(name, None)
        due = self._not_before.get(name)
        if due is not None and due <= time.monotonic():
            del self._not_before[name]
        self.add(name)

    async def get(self) -> str:
        while True:
            _, _, name = await self._ready.get()
            if name in self._queued:
                break
        self._queued.discard(name)
        self._active.add(name)
        return name

    def done(self, name: str) -> None:
        self._active.discard(name)
        if name in self._dirty:
            self._dirty.discard(name)
            self.add(name)

    def forget(self, name: str) -> None:
        """The project is gone: drop its timers and backoff."""
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        self._not_before.pop(name, None)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


def _loop_offset() -> float:
    """The event loop's clock is monotonic but may have another origin than time.monotonic()."""
    return asyncio.get_running_loop().time() - time.monotonic()
