"""The readiness probe against real sockets on loopback: what counts as an answering endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import uvloop
from support import free_port

from tether.api.models import HealthCheck, HttpCheck, TcpCheck
from tether.operator.health import ROUTED_MISSES, Prober

HTTP = HttpCheck(type="http", path="/healthz", timeout_s=0.5)
TCP = TcpCheck(type="tcp", timeout_s=0.5)


class Canned:
    """Serves canned answers on loopback ports, and records each request's first line."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self._servers: list[asyncio.Server] = []

    async def serve(self, answer: bytes, *later: bytes) -> int:
        """`answer` to each request, or, with `later` answers, `answer` to the first and each
        of `later` to the next ones (the last for all after)."""
        answers = [answer, *later]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.requests.append(await reader.readline())
            answer = answers[min(len(self.requests), len(answers)) - 1]
            if answer:
                writer.write(answer)
                await writer.drain()
            else:  # never answers: the probe must give up on its own
                await reader.read()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self._servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()


@pytest.fixture
async def canned() -> AsyncIterator[Canned]:
    endpoints = Canned()
    yield endpoints
    await endpoints.close()


@pytest.mark.parametrize(
    ("answer", "healthy"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.0 204 No Content\r\n\r\n", True),
        (b"HTTP/1.1 302 Found\r\nLocation: /login\r\n\r\n", True),
        (b"HTTP/1.1 404 Not Found\r\n\r\n", False),
        (b"HTTP/1.1 500 Internal Server Error\r\n\r\n", False),
        (b"HTTP/1.1 503\r\n\r\n", False),
        (b"SSH-2.0-OpenSSH_9.2\r\n", False),
        (b"", False),  # accepts, never answers
    ],
)
async def test_an_http_check_wants_a_2xx_or_3xx_answer(
    canned: Canned, answer: bytes, healthy: bool
) -> None:
    port = await canned.serve(answer)
    assert await Prober("127.0.0.1").healthy(HTTP, 8080, port) is healthy


async def test_an_http_check_gets_its_path_percent_encoded_where_needed(canned: Canned) -> None:
    port = await canned.serve(b"HTTP/1.1 200 OK\r\n\r\n")
    check = HttpCheck(type="http", path="/health/é?full=1&x=%20")
    assert await Prober("127.0.0.1").healthy(check, 8080, port)
    assert canned.requests == [b"GET /health/%C3%A9?full=1&x=%20 HTTP/1.1\r\n"]


@pytest.mark.parametrize(
    ("check", "answer", "healthy"),
    [
        (HTTP, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
        (HTTP, b"HTTP/1.1 503\r\n\r\n", False),
        (HTTP, b"", False),
        (TCP, b"", True),
    ],
)
async def test_the_probe_answers_the_same_on_uvloop_which_the_operator_runs_on(
    canned: Canned, check: HealthCheck, answer: bytes, healthy: bool
) -> None:
    """The tests run on asyncio's own loop; `tether operator` on uvloop, whose transports are
    classes of their own."""
    port = await canned.serve(answer)
    probe = Prober("127.0.0.1").healthy(check, 8080, port)
    assert await asyncio.to_thread(uvloop.run, probe) is healthy


@pytest.mark.parametrize("check", [HTTP, TCP, None], ids=["http", "tcp", "default"])
async def test_nothing_listening_is_not_healthy(check: HealthCheck | None) -> None:
    assert not await Prober("127.0.0.1").healthy(check, 8080, free_port())


@pytest.mark.parametrize("check", [TCP, None], ids=["tcp", "default"])
async def test_a_tcp_check_wants_the_port_to_accept(
    canned: Canned, check: HealthCheck | None
) -> None:
    port = await canned.serve(b"")
    assert await Prober("127.0.0.1").healthy(check, 8080, port)


async def test_a_deployment_without_a_port_has_no_endpoint_to_probe() -> None:
    assert await Prober("127.0.0.1").healthy(None, None, free_port())


FAILED = b"HTTP/1.1 500 Internal Server Error\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\n\r\n"


async def test_a_routed_endpoint_that_misses_fewer_probes_than_the_limit_still_answers(
    canned: Canned,
) -> None:
    port = await canned.serve(*[FAILED] * (ROUTED_MISSES - 1), OK)
    assert await Prober("127.0.0.1").still_answers(HTTP, 8080, f"127.0.0.1:{port}")
    assert len(canned.requests) == ROUTED_MISSES


async def test_a_routed_endpoint_that_misses_the_limit_in_a_row_does_not_answer(
    canned: Canned,
) -> None:
    port = await canned.serve(*[FAILED] * ROUTED_MISSES, OK)
    assert not await Prober("127.0.0.1").still_answers(HTTP, 8080, f"127.0.0.1:{port}")
    assert len(canned.requests) == ROUTED_MISSES


async def test_a_status_line_that_arrives_in_pieces_is_read_whole() -> None:
    """TCP may deliver the reply in any number of segments: the probe waits for the line's end."""
    pieces = [b"HTTP/1.1 2", b"00 OK\r", b"\nContent-Length: 0\r\n\r\n"]
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0)  # let each piece go out as a segment of its own
        await reader.read()  # until the probe closes its end: it must not wait for ours
        closed.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        assert await Prober("127.0.0.1").healthy(HTTP, 8080, port)
        async with asyncio.timeout(5):
            await closed.wait()


async def test_a_reply_without_a_line_end_is_not_healthy_before_its_timeout() -> None:
    """A peer that streams bytes without ever ending a line is not HTTP: the probe gives up on
    it once it has read more than any status line, not at its timeout."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK" + b"x" * 10_000)
        await writer.drain()
        await reader.read()  # and keeps the connection open
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        patient = HttpCheck(type="http", path="/healthz", timeout_s=60)
        async with asyncio.timeout(10):
            assert not await Prober("127.0.0.1").healthy(patient, 8080, port)


async def test_a_connection_closed_before_the_status_line_ends_is_not_healthy(
    canned: Canned,
) -> None:
    port = await canned.serve(b"HTTP/1.1 200 OK")  # then the server closes
    assert not await Prober("127.0.0.1").healthy(HTTP, 8080, port)
