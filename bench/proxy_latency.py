"""Latency through tether's proxy (a real HAProxy, rendered as tether runs it) vs straight to
the upstream: one keep-alive client, requests interleaved, p50/p99 of each and the overhead;
and the time of one admin-socket command. Loopback only; about 10 s.

    .venv/bin/python bench/proxy_latency.py [--requests 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from upstream import Upstream

from tether.operator.haproxy.admin import HAProxy
from tether.operator.haproxy.config import ProxyConfig
from tether.operator.haproxy.process import HAProxyProcess
from tether.operator.routing import Route

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def free_block(size: int = 10) -> int:
    for first in range(47000, 60000, 100):
        try:
            for port in range(first, first + size):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError("no free block of ports")


async def client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    started = time.perf_counter()
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    return time.perf_counter() - started


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)] * 1000


async def main(requests: int) -> None:
    first = free_block()
    directory = Path(tempfile.mkdtemp(prefix="tether-bench-proxy-", dir="/tmp"))
    config = ProxyConfig(directory, directory / "admin.sock", "127.0.0.1", first, first + 9, 10)
    process = HAProxyProcess(config)
    upstream = await Upstream("u").start()
    try:
        await process.start()
        admin = HAProxy(config)
        await admin.set_route(first, Route("http", upstream.address, time.time()))
        direct, proxied = await client(upstream.port), await client(first)
        d: list[float] = []
        p: list[float] = []
        for _ in range(requests):
            d.append(await one(*direct))
            p.append(await one(*proxied))
        commands = []
        for _ in range(200):
            started = time.perf_counter()
            await admin.routes()
            commands.append(time.perf_counter() - started)
        for name, values in (("direct", d), ("proxy", p)):
            p50, p99 = quantile(values, 0.5), quantile(values, 0.99)
            print(f"{name:7} p50 {p50:.3f} ms  p99 {p99:.3f} ms")
        print(f"overhead p50 {quantile(p, 0.5) - quantile(d, 0.5):.3f} ms (target <= 0.5 ms)")
        print(f"admin command (show map) p50 {quantile(commands, 0.5):.3f} ms")
        for _, writer in (direct, proxied):
            writer.close()
    finally:
        await upstream.close()
        await process.stop(grace_s=2)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    asyncio.run(main(parser.parse_args().requests))
