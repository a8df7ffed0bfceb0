"""Load through a project's endpoint: HTTP/1.1 keep-alive clients that never retry.

Each client keeps one connection open and sends `GET /version` after `GET /version`, reading
each answer whole. A request that fails in any way (refused, reset, cut mid-answer, a status
other than 200, no answer within the timeout) counts as failed and is never sent again. A
connection the server closes after an answer (`Connection: close`) is replaced before the next
request, as every HTTP client does: that is no retry. Each answer's body (the workload's
`$RELEASE`) is recorded with the time it arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field

POLL_S = 0.01  # how often `wait_for_answers` counts again
REQUEST = b"GET /version HTTP/1.1\r\nHost: tether-load\r\nUser-Agent: tether-load\r\n\r\n"


@dataclass
class Tally:
    answers: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, version)
    failures: list[str] = field(default_factory=list)

    def versions(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        return Counter(v for t, v in self.answers if since <= t <= until)


class Load:
    """`clients` clients on `host:port` from `start()` until `stop()`."""

    def __init__(self, host: str, port: int, *, clients: int = 16, timeout_s: float = 10.0):
        self._address = (host, port)
        self._clients = clients
        self._timeout_s = timeout_s
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.tally = Tally()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self._clients)]

    async def stop(self) -> Tally:
        self._stopping.set()
        await asyncio.gather(*self._tasks)
        return self.tally

    async def wait_for_answers(self, count: int, within_s: float = 30.0) -> None:
        """Until `count` more answers than now have arrived (the load really runs)."""
        target = len(self.tally.answers) + count
        deadline = time.monotonic() + within_s
        while len(self.tally.answers) < target:
            assert not self.tally.failures, self.tally.failures[:5]
            assert time.monotonic() < deadline, f"fewer than {count} answers in {within_s} s"
            await asyncio.sleep(POLL_S)

    async def _client(self) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            while not self._stopping.is_set():
                try:
                    async with asyncio.timeout(self._timeout_s):
                        if writer is None:
                            reader, writer = await asyncio.open_connection(*self._address)
                        version, keep = await _exchange(reader, writer)
                except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
                    self.tally.failures.append(f"{type(exc).__name__}: {exc}")
                    return
                self.tally.answers.append((time.monotonic(), version))
                if not keep:
                    writer.close()
                    writer = None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, bool]:
    """One request and its whole answer: (body, whether the connection stays open)."""
    writer.write(REQUEST)
    await writer.drain()
    status = await reader.readline()
    if not status:
        raise ValueError("the connection was closed before an answer")
    length, keep = None, True
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
        if name.strip().lower() == "connection" and value.strip().lower() == "close":
            keep = False
    if length is None:
        raise ValueError("an answer without Content-Length")
    body = (await reader.readexactly(length)).decode(errors="replace").strip()
    if not status.startswith(b"HTTP/1.1 200"):
        # The body tells whose answer it was: the proxy's ("no route", "held too long", "No
        # server is available") or the workload's.
        raise ValueError(f"answered {status.decode(errors='replace').strip()!r}: {body[:120]!r}")
    return body, keep
