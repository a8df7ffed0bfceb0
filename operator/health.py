"""Ready means the user's endpoint answers: probes through the project's published host port."""

from __future__ import annotations

import asyncio
import re
import string
from typing import cast
from urllib.parse import quote

from tether.api.models import HealthCheck

# "HTTP/1.1 204 No Content": the status line is all a probe reads.
_STATUS_LINE = re.compile(rb"HTTP/\d\.\d (\d{3})(?: |\r?$)")
# An endpoint the proxy routes to carries its clients' requests: it counts as not answering only
# after this many failed probes in a row, RETRY_S apart, so that one answer slowed past the
# timeout (a loaded machine) does not hold every client. Docker's HEALTHCHECK (--retries) and
# HAProxy (fall) count 3 too.
ROUTED_MISSES = 3
ROUTED_RETRY_S = 0.1
# Longer than any status line: a reply without one this soon is not HTTP (as asyncio's streams
# gave up on a line past their 64 KiB limit).
MAX_STATUS_LINE = 8192


def probe_host(publish_address: str) -> str:
    """Where to reach a port published on `publish_address` from this host."""
    return "127.0.0.1" if publish_address in ("", "0.0.0.0") else publish_address


class Prober:
    """Probes with a bare request on a fresh connection rather than an HTTP client library: the
    operator re-probes every settled endpoint on each resync, and a general-purpose client
    costs four times the CPU per probe, and asyncio's streams a third more than the protocol
    of its own (`_StatusLine`) it writes the request and reads the status line with
    (docs/benchmarks.md, idle cost)."""

    def __init__(self, publish_address: str) -> None:
        self._host = probe_host(publish_address)

    def endpoint(self, host_port: int) -> str:
        return f"{self._host}:{host_port}"

    async def healthy(self, check: HealthCheck | None, port: int | None, host_port: int) -> bool:
        """Whether the project's stable endpoint (through the proxy) answers."""
        return await self.healthy_at(check, port, self.endpoint(host_port))

    async def healthy_at(self, check: HealthCheck | None, port: int | None, address: str) -> bool:
        """Whether `address` (`host:port`) answers the deployment's check. A deployment without
        a port has no endpoint: running is all that can be known. With a port and no explicit
        check, the port must accept a TCP connection; an HTTP check wants a 2xx or 3xx answer to
        a GET of its path."""
        if port is None:
            return True
        timeout = check.timeout_s if check else 2.0
        path = check.path if check is not None and check.type == "http" else None
        host, _, number = address.rpartition(":")
        try:
            async with asyncio.timeout(timeout):
                return await _probe(host, int(number), path)
        except (OSError, TimeoutError, ValueError):
            return False

    async def still_answers(
        self, check: HealthCheck | None, port: int | None, address: str
    ) -> bool:
        """Whether the routed endpoint `address` answers, by up to ROUTED_MISSES probes: the
        first that answers ends it."""
        for attempt in range(ROUTED_MISSES):
            if attempt:
                await asyncio.sleep(ROUTED_RETRY_S)
            if await self.healthy_at(check, port, address):
                return True
        return False


async def _probe(host: str, port: int, path: str | None) -> bool:
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[bool] = loop.create_future()
    request = None if path is None else _request(host, port, path)
    transport, _ = await loop.create_connection(lambda: _StatusLine(request, answered), host, port)
    try:
        return await answered
    finally:
        transport.close()  # also when the timeout cancels the wait


def _request(host: str, port: int, path: str) -> bytes:
    # Printable non-ASCII characters are allowed in a path: they go out UTF-8 percent-encoded,
    # as a browser sends them.
    target = quote(path, safe=string.punctuation)
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "User-Agent: tether-probe\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


class _StatusLine(asyncio.Protocol):
    """One probe's connection: it answers True once connected (`request` None: a TCP check),
    or writes `request` and answers whether the reply's status line is a 2xx or 3xx; anything
    else (no status line, the connection closed before one) answers False."""

    def __init__(self, request: bytes | None, answered: asyncio.Future[bool]) -> None:
        self._request = request
        self._answered = answered
        self._received = b""
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if self._request is None:
            self._answer(True)
        else:
            # uvloop's TCP transport is not an asyncio.Transport subclass, though it is one.
            cast(asyncio.WriteTransport, transport).write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._answered.done():
            return  # the rest of the reply, read before the close took effect
        self._received += data
        end = self._received.find(b"\n")
        if end >= 0:
            match = _STATUS_LINE.match(self._received, 0, end + 1)
            self._answer(match is not None and 200 <= int(match[1]) < 400)
        elif len(self._received) > MAX_STATUS_LINE:
            self._answer(False)

    def eof_received(self) -> bool:
        self._answer(False)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._answer(False)

    def _answer(self, healthy: bool) -> None:
        if not self._answered.done():
            self._answered.set_result(healthy)
        if self._transport is not None:
            self._transport.close()
