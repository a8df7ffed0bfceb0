"""`HAProxy`: the `Proxy` over HAProxy's admin socket (its runtime API), with asyncio.

One command per connection: HAProxy answers and closes, so there is no session to lose across a
reload or a restart (a command costs about 0.2 ms here, see docs/faults.md). Every failure is a
`ProxyFault`; connection errors and timeouts are retried (tenacity) before they are raised.
Route changes are also written to the map file (a temporary file renamed over it), so that a
reloaded or restarted HAProxy starts with the routes of the moment. Changes made while the file is
being written share the next write (a group commit): under a bulk of passes, one write serves
many, and no change waits on the file behind a queue of others.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import Counter

import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from tether.operator.haproxy.config import FRONTEND, SERVER, ProxyConfig, render_map
from tether.operator.metrics import PROXY_CALL_SECONDS, PROXY_CALLS
from tether.operator.routing import ProxyFault, Route

log = structlog.get_logger("tether.proxy")

NOT_FOUND = "entry not found."  # `set map` of a key not in the map
KEY_NOT_FOUND = "Key not found."  # `del map` of one
# A stream of `show sess all` that has a server: `  server=upstream (id=1) addr=127.0.0.1:32768`
_SERVER_LINE = re.compile(rf"^\s+server={SERVER} \(id=\d+\) addr=(\S+)$", re.MULTILINE)
# `get map` of a key in the map: `type=int, ..., found=yes, ..., value="http:127.0.0.1:32768:..."`
_GET_MAP = re.compile(r'found=yes\b.*\bvalue="([^"]*)"')
_STREAM_HEAD = re.compile(r"^0x[0-9a-f]+: ", re.MULTILINE)


class _Unreachable(Exception):
    """The socket did not answer (connection refused, reset, timeout): worth another try."""


class HAProxy:
    """The stable endpoints' proxy: HAProxy, driven through its admin socket."""

    def __init__(self, config: ProxyConfig, *, timeout_s: float = 5.0, attempts: int = 3) -> None:
        self.config = config
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._map = str(config.map_file)
        # Route changes one at a time (`set` then `add`, for a port not in the map yet).
        self._lock = asyncio.Lock()
        # The map file: one write at a time, each covering every change counted before it began.
        self._writing = asyncio.Lock()
        self._changes = 0
        self._written = 0

    # The Proxy protocol

    async def routes(self) -> dict[int, Route | None]:
        return {port: Route.decode(value) for port, value in (await self._show_map()).items()}

    async def route(self, port: int) -> Route | None:
        """`get map`: one lookup, not the whole map (a pass reads its own route)."""
        answer = await self.command("route", f"get map {self._map} {port}")
        found = _GET_MAP.search(answer)
        return Route.decode(found[1]) if found else None

    async def set_route(self, port: int, route: Route) -> None:
        value = route.encode()
        if any(c.isspace() for c in value) or route.upstream.count(":") > 1:
            raise ValueError(f"not a route the proxy can hold: {value!r}")  # IPv4 upstreams only
        async with self._lock:
            line = f"set map {self._map} {port} {value}"
            if await self.command("set_route", line, accept=("", NOT_FOUND)) == NOT_FOUND:
                await self.command("set_route", f"add map {self._map} {port} {value}", accept=("",))
        await self._save_map()

    async def remove_route(self, port: int) -> None:
        async with self._lock:
            line = f"del map {self._map} {port}"
            await self.command("remove_route", line, accept=("", KEY_NOT_FOUND))
        await self._save_map()

    async def in_flight(self) -> dict[str, int]:
        return dict(count_in_flight(await self.command("in_flight", "show sess all")))

    async def ping(self) -> None:
        answer = await self.command("ping", "show info")
        if "Name: HAProxy" not in answer:
            raise ProxyFault("ping", f"{self.config.socket} answered {answer[:200]!r}")

    async def close(self) -> None:
        """Nothing is kept open between calls."""

    # The admin socket

    async def command(
        self, operation: str, line: str, *, accept: tuple[str, ...] | None = None
    ) -> str:
        """One command on a connection of its own; its answer, without the trailing blank line.
        `ProxyFault` once the socket has failed to answer `attempts` times, or when the answer is
        not one of `accept` (if given)."""
        started = time.perf_counter()
        status = "ok"
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_Unreachable),
                stop=stop_after_attempt(self._attempts),
                wait=wait_exponential_jitter(multiplier=0.05, max=1.0),
                reraise=True,
            ):
                with attempt:
                    answer = await self._exchange(line)
        except _Unreachable as exc:
            status = "unreachable"
            raise ProxyFault(
                operation,
                f"HAProxy's admin socket {self.config.socket} did not answer "
                f"({self._attempts} tries): {exc}",
            ) from exc
        else:
            if accept is not None and answer not in accept:
                status = "refused"
                raise ProxyFault(operation, f"HAProxy refused {line!r}: {answer.strip()}")
            return answer
        finally:
            PROXY_CALLS.labels(operation, status).inc()
            PROXY_CALL_SECONDS.labels(operation).observe(time.perf_counter() - started)

    async def _exchange(self, line: str) -> str:
        try:
            async with asyncio.timeout(self._timeout_s):
                reader, writer = await asyncio.open_unix_connection(str(self.config.socket))
                try:
                    writer.write(line.encode() + b"\n")
                    await writer.drain()
                    answer = await reader.read()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except TimeoutError as exc:
            raise _Unreachable(f"no answer within {self._timeout_s:g} s") from exc
        except OSError as exc:
            raise _Unreachable(exc.strerror or type(exc).__name__) from exc
        if not answer:  # HAProxy answers every command, if only with a blank line
            raise _Unreachable("the connection closed without an answer")
        return answer.decode(errors="replace").rstrip("\n")

    async def _show_map(self) -> dict[int, str]:
        answer = await self.command("routes", f"show map {self._map}")
        routes: dict[int, str] = {}
        for line in answer.splitlines():
            ref, _, rest = line.partition(" ")
            key, _, value = rest.partition(" ")
            if not ref.startswith("0x") or not key.isdigit():
                raise ProxyFault("routes", f"{self._map} reads {answer.strip()[:200]!r}")
            routes[int(key)] = value
        return routes

    async def _save_map(self) -> None:
        """Once a change is made: the map file, as HAProxy holds the map now or later. A write
        that began after this change was made covers it; one that failed covers nothing, and the
        next caller writes again."""
        self._changes += 1
        change = self._changes
        async with self._writing:
            if self._written >= change:
                return
            covered = self._changes
            await self._write_map()
            self._written = covered

    async def _write_map(self) -> None:
        """The map file, as HAProxy holds the map now (a temporary file renamed over it)."""
        text = render_map(await self._show_map())
        path = self.config.map_file
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            await asyncio.to_thread(_write_atomically, temporary, path, text)
        except OSError as exc:
            raise ProxyFault("write_map", f"cannot write {path}: {exc}") from exc


def _write_atomically(temporary: os.PathLike[str], path: os.PathLike[str], text: str) -> None:
    """Renamed over the old file: HAProxy, killed or reloaded at any moment, reads a whole map.
    Not fsynced: the file serves a restart of HAProxy, not of the machine (after which no
    container runs and the operator's resync routes every project afresh), and an fsync waits
    on the disk behind Docker's own writes during a bulk of changes."""
    with open(temporary, "w") as file:
        file.write(text)
    os.replace(temporary, path)


def count_in_flight(sessions: str) -> Counter[str]:
    """Streams with an upstream, per upstream address, in the answer to `show sess all`."""
    counts: Counter[str] = Counter()
    heads = [match.start() for match in _STREAM_HEAD.finditer(sessions)]
    for start, end in zip(heads, [*heads[1:], len(sessions)], strict=True):
        block = sessions[start:end]
        if f"frontend={FRONTEND} " not in block:
            continue
        match = _SERVER_LINE.search(block)
        if match:
            counts[match[1]] += 1
    return counts
