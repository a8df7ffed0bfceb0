"""HTTP requests at a fixed offered rate, measured as pgbench measures its transactions under
`--rate`: each of N clients (one keep-alive connection each) starts its requests along a Poisson
schedule of rate/N per second, and a request's latency runs from its *scheduled* start, not from
when it was sent. A server that falls behind is charged for the wait it causes (no coordinated
omission): a closed-loop client such as wrk only sends once the previous answer is in, so its
latencies leave that wait out.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from measures import percentile


async def offered(
    host: str,
    port: int,
    request: Callable[[int, int], bytes],
    *,
    clients: int,
    rate_per_s: float,
    duration_s: float,
) -> dict[str, Any]:
    """`request(client, k)` is the k-th request of a client, whole (HTTP/1.1, keep-alive)."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors: list[str] = []
    began = loop.time()
    until = began + duration_s

    async def client(c: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        rng = random.Random(c)
        scheduled = began + rng.expovariate(rate_per_s / clients)
        k = 0
        try:
            while scheduled < until:
                wait = scheduled - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(request(c, k))
                status = await _answer(reader)
                latencies.append((loop.time() - scheduled) * 1000)
                if status != 200:
                    errors.append(str(status))
                k += 1
                scheduled += rng.expovariate(rate_per_s / clients)
        finally:
            writer.close()

    wall = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
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
        "errors": len(errors),
    }


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
