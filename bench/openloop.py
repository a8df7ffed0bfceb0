"""Writes at a fixed offered rate, measured as pgbench measures its transactions under
`--rate`: each of N clients (one connection each) starts its writes along a Poisson schedule of
rate/N per second, and a write's latency runs from its *scheduled* start, not from when it was
sent. A server that falls behind is charged for the wait it causes (no coordinated omission): a
closed-loop client such as wrk only sends once the previous answer is in, so its latencies leave
that wait out. The schedule is kept by this (Python) process: the same schedule drives the API
over HTTP and the same SQL over asyncpg, so that what the generator itself adds to a latency
(its own event loop's delays) is measured too.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from measures import percentile

# A client's k-th write; whether it succeeded.
Write = Callable[[int], Awaitable[bool]]


async def offered(
    writers: Sequence[Write], *, rate_per_s: float, duration_s: float
) -> dict[str, Any]:
    """Each of `writers` is a client on its own connection, writing along its schedule."""
    loop = asyncio.get_running_loop()
    clients = len(writers)
    latencies: list[float] = []
    errors = 0
    began = loop.time()
    until = began + duration_s

    async def client(c: int, write: Write) -> None:
        nonlocal errors
        rng = random.Random(c)
        scheduled = began + rng.expovariate(rate_per_s / clients)
        k = 0
        while scheduled < until:
            wait = scheduled - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            ok = await write(k)
            latencies.append((loop.time() - scheduled) * 1000)
            errors += not ok
            k += 1
            scheduled += rng.expovariate(rate_per_s / clients)

    wall = time.perf_counter()
    await asyncio.gather(*(client(c, write) for c, write in enumerate(writers)))
    seconds = time.perf_counter() - wall
    if not latencies:
        raise RuntimeError("the open-loop client got no answer")
    return {
        "seconds": seconds,
        "offered_per_s": rate_per_s,
        "writes": len(latencies),
        "writes_per_s": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "errors": errors,
    }


async def offered_http(
    host: str,
    port: int,
    request: Callable[[int, int], bytes],
    *,
    clients: int,
    rate_per_s: float,
    duration_s: float,
) -> dict[str, Any]:
    """`request(client, k)` is the k-th request of a client, whole (HTTP/1.1, keep-alive); a
    write succeeded when it was answered 200."""
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def writer(c: int) -> Write:
        reader, stream = connections[c]

        async def write(k: int) -> bool:
            stream.write(request(c, k))
            return await _answer(reader) == 200

        return write

    try:  # a connect that fails closes the ones already open
        for _ in range(clients):
            connections.append(await asyncio.open_connection(host, port))
        return await offered(
            [writer(c) for c in range(clients)], rate_per_s=rate_per_s, duration_s=duration_s
        )
    finally:
        for _, stream in connections:
            stream.close()


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one whole answer (sent with a Content-Length, as the API's are); its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status
