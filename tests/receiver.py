"""A webhook receiver on loopback for the tests: a real HTTP/1.1 server (asyncio streams) that
records what it is sent and answers as the test says: at once, with an error, with a redirect,
never, with an answer that never ends, or with a huge one; and that can be down for a while.

Each request's connection is recorded with when it was accepted and when the sender hung up,
so that a test can tell the sender cut it off."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["ok", "error", "redirect", "silent", "stream", "huge"]
HUGE_BYTES = 8 * 1024 * 1024
TRICKLE_S = 0.05  # between two bytes of an answer that never ends


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    accepted_at: float
    hung_up_at: float | None = None  # when the sender closed the connection (monotonic)

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    mode: Mode = "ok"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    sent_bytes: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        """Listen (again, on the same port once it had one)."""
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Down: connections are refused, and those open are closed."""
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            request = await self._read(reader)
            if request is None:
                return
            self.received.append(request)
            await self._answer(request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read(self, reader: asyncio.StreamReader) -> Received | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")[1:]
        headers = {}
        for line in lines:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Received(headers, body, accepted_at=time.monotonic())

    async def _answer(
        self, request: Received, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.mode == "silent":
            await self._until_hung_up(request, reader)
            return
        if self.mode == "stream":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            streaming = asyncio.ensure_future(self._trickle(writer))
            try:
                await self._until_hung_up(request, reader)
            finally:
                streaming.cancel()
                await asyncio.gather(streaming, return_exceptions=True)
            return
        if self.mode == "huge":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % HUGE_BYTES)
            chunk = b"x" * 65536
            for _ in range(HUGE_BYTES // len(chunk)):
                writer.write(chunk)
                self.sent_bytes += len(chunk)
                await writer.drain()
            return
        status, extra, body = {
            "ok": (b"200 OK", b"", b"thanks"),
            "error": (b"500 Internal Server Error", b"", b"receiver broke"),
            "redirect": (b"302 Found", b"Location: http://127.0.0.1:9/elsewhere\r\n", b""),
        }[self.mode]
        writer.write(
            b"HTTP/1.1 "
            + status
            + b"\r\n"
            + extra
            + b"Content-Length: %d\r\n" % len(body)
            + b"Connection: close\r\n\r\n"
            + body
        )
        await writer.drain()

    async def _trickle(self, writer: asyncio.StreamWriter) -> None:
        """A chunk every 50 ms, forever: never silent long enough for a read timeout."""
        while True:
            writer.write(b"1\r\nx\r\n")
            self.sent_bytes += 1
            await writer.drain()
            await asyncio.sleep(TRICKLE_S)

    async def _until_hung_up(self, request: Received, reader: asyncio.StreamReader) -> None:
        await reader.read()  # returns b"" once the sender closes its side
        request.hung_up_at = time.monotonic()
