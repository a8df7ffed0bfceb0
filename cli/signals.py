"""SIGINT and SIGTERM in a server process: the first asks every part to stop and drain."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """A stop was requested while starting up."""


class Stopper:
    """Turns SIGINT and SIGTERM into one `event` that every part of a server process watches.

    The first signal asks for a clean stop; a second SIGINT or SIGTERM tells `on_stop` callbacks
    to give up waiting (uvicorn then drops open connections).
    """

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._callbacks: list[Callable[[bool], None]] = []

    def on_stop(self, callback: Callable[[bool], None]) -> None:
        self._callbacks.append(callback)
        if self.event.is_set():
            callback(True)

    def request(self) -> None:
        first = not self.event.is_set()
        self.event.set()
        for callback in self._callbacks:
            callback(first)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals only reach the main thread: nothing to install
            return
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self.request)
        try:
            yield
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)

    async def unless_stopped(self, awaitable: Awaitable[T]) -> T:
        """Await a startup step, or cancel it and raise `Interrupted` once a stop is requested."""
        step = asyncio.ensure_future(awaitable)
        stopped = asyncio.ensure_future(self.event.wait())
        try:
            await asyncio.wait({step, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await step
        if step.cancelled():
            raise Interrupted
        return step.result()
