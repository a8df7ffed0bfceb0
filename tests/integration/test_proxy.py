"""The proxy against a real HAProxy (the host's binary, one per test, on the test's own port
block): routes added, switched and removed on its admin socket; keep-alive clients across
switches and reloads without a failed request; a killed HAProxy restarted with its routes; held
routes; requests in flight; the admin socket down. Upstreams are tiny asyncio servers on
127.0.0.1 (tests/upstream.py) that answer with their own name."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest
from conftest import RunningProxy
from prometheus_client import REGISTRY
from support import wait_for
from upstream import Upstream

from tether.api.settings import Settings
from tether.api.store import PortRange
from tether.cli.proxy_server import running_proxy
from tether.operator.haproxy import proxy_config
from tether.operator.haproxy.admin import HAProxy
from tether.operator.haproxy.config import ProxyConfig
from tether.operator.haproxy.process import HAProxyProcess, ProxyNotStarted
from tether.operator.routing import HELD, ProxyFault, Route

CLIENTS = 16


async def tether_proxy(env: dict[str, str], *, output: int) -> asyncio.subprocess.Process:
    """`tether proxy`'s function in a process of its own (the caller waits with `answering`)."""
    code = "from tether.api.settings import Settings; from tether.cli.proxy_server import proxy; "
    code += "proxy(Settings())"
    stderr = asyncio.subprocess.STDOUT if output == asyncio.subprocess.PIPE else output
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, stdout=output, stderr=stderr
    )


async def answers(client: HAProxy) -> bool:
    try:
        await client.ping()
    except ProxyFault:
        return False
    return True


async def answering(client: HAProxy) -> None:
    await wait_for(lambda: answers(client), "tether proxy answering", within_s=20, every_s=0.02)


PROJECT = "shop"


def http(upstream: Upstream, since: float | None = None) -> Route:
    return Route(
        "http", upstream.address, round(time.time() if since is None else since, 3), PROJECT
    )


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[Upstream, Upstream]]:
    a = await Upstream("a").start()
    b = await Upstream("b").start()
    try:
        yield a, b
    finally:
        a.release.set()
        b.release.set()
        await a.close()
        await b.close()


def endpoint(proxy: RunningProxy, index: int = 0) -> int:
    return proxy.config.first_port + index


def map_file_lines(proxy: RunningProxy) -> list[str]:
    """The routes the map file holds for a restart, as its `PORT VALUE` lines."""
    lines = proxy.config.map_file.read_text().splitlines()
    return [line for line in lines if not line.startswith("#")]


async def get(port: int, path: str = "/") -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(f"http://127.0.0.1:{port}{path}")


async def refused(port: int) -> bool:
    """Whether the proxy turns a connection to `port` away without a byte of answer."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionError:  # refused, or reset as it was accepted
        return True
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read() == b""
    except ConnectionError:
        return True
    finally:
        writer.close()


def calls(operation: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "tether_proxy_calls_total", {"operation": operation, "status": status}
    )
    return value or 0.0


async def test_routes_are_added_switched_and_removed(
    proxy_process: RunningProxy, haproxy: HAProxy, upstreams: tuple[Upstream, Upstream]
) -> None:
    a, b = upstreams
    port = endpoint(proxy_process)
    assert await haproxy.routes() == {}
    assert await refused(port)

    to_a = http(a)
    await haproxy.set_route(port, to_a)
    assert (await get(port)).text == "a"
    assert await haproxy.routes() == {port: to_a}

    to_b = http(b)
    await haproxy.set_route(port, to_b)
    assert (await get(port)).text == "b"
    assert await haproxy.routes() == {port: to_b}
    # The map file follows, for a restart: the same routes, nothing else.
    assert map_file_lines(proxy_process) == [f"{port} {to_b.encode()}"]

    # A second project, in TCP mode: the upstream's bytes pass as they are.
    other = endpoint(proxy_process, 1)
    await haproxy.set_route(other, Route("tcp", a.address, time.time(), PROJECT))
    assert (await get(other)).text == "a"

    await haproxy.remove_route(port)
    await haproxy.remove_route(port)  # absent: nothing to do
    assert await refused(port)
    assert set(await haproxy.routes()) == {other}
    assert (await get(other)).text == "a"


async def test_concurrent_changes_are_all_in_the_map_file_and_share_its_writes(
    proxy_process: RunningProxy, haproxy: HAProxy, upstreams: tuple[Upstream, Upstream]
) -> None:
    """A bulk of passes changes routes at once: each change is in the map file when its call
    returns, and changes made while the file is being written share the next write."""
    a, b = upstreams
    ports = [endpoint(proxy_process, i) for i in range(30)]
    await asyncio.gather(*(haproxy.set_route(port, http(a)) for port in ports))
    written_before = calls("routes", "ok")

    async def switch_or_remove(i: int, port: int) -> None:
        if i % 3:
            await haproxy.set_route(port, http(b, since=1.0))
        else:
            await haproxy.remove_route(port)
        held = dict(line.split(" ", 1) for line in map_file_lines(proxy_process))
        if i % 3:
            assert held[str(port)] == http(b, since=1.0).encode()
        else:
            assert str(port) not in held

    await asyncio.gather(*(switch_or_remove(i, port) for i, port in enumerate(ports)))
    writes = calls("routes", "ok") - written_before  # each write reads HAProxy's map first
    assert 1 <= writes < len(ports)
    kept = {port: http(b, since=1.0) for i, port in enumerate(ports) if i % 3}
    assert await haproxy.routes() == kept
    assert sorted(map_file_lines(proxy_process)) == sorted(
        f"{port} {route.encode()}" for port, route in kept.items()
    )


async def test_ports_without_a_route_are_refused(
    proxy_process: RunningProxy, haproxy: HAProxy, upstreams: tuple[Upstream, Upstream]
) -> None:
    a, _ = upstreams
    await haproxy.set_route(endpoint(proxy_process, 5), http(a))
    assert await refused(endpoint(proxy_process, 4))
    assert await refused(proxy_process.config.last_port)
    assert (await get(endpoint(proxy_process, 5))).text == "a"


async def test_a_value_written_by_hand_reads_as_none(
    proxy_process: RunningProxy, haproxy: HAProxy
) -> None:
    port = endpoint(proxy_process)
    await haproxy.command("edit", f"add map {proxy_process.config.map_file} {port} whatever")
    assert await haproxy.routes() == {port: None}
    assert await refused(port)


@dataclass
class Load:
    """CLIENTS keep-alive HTTP clients (one connection each, never retrying) requesting in a
    loop; every answer recorded with when its request started and ended."""

    port: int
    answers: list[tuple[float, float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        transport = httpx.AsyncHTTPTransport(retries=0, limits=limits)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    response = await client.get(f"http://127.0.0.1:{self.port}/")
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code} {response.text}")
                    else:
                        self.answers.append((started, time.monotonic(), response.text))
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    async def until(self, count: int, within_s: float = 20.0) -> None:
        """Until `count` more answers have come."""
        target = len(self.answers) + count

        async def enough() -> bool:
            return len(self.answers) >= target or bool(self.failures)

        await wait_for(enough, f"{count} more answers", within_s=within_s, every_s=0.02)


async def under_load(port: int, body: Callable[[Load], Awaitable[None]]) -> Load:
    load = Load(port)
    clients = [asyncio.create_task(load.client()) for _ in range(CLIENTS)]
    try:
        await load.until(CLIENTS * 5)
        await body(load)
        await load.until(CLIENTS * 5)
    finally:
        load.stop.set()
        await asyncio.gather(*clients)
    return load


async def test_keep_alive_clients_across_switches_fail_nothing_and_reach_the_route_of_the_moment(
    proxy_process: RunningProxy, haproxy: HAProxy, upstreams: tuple[Upstream, Upstream]
) -> None:
    a, b = upstreams
    port = endpoint(proxy_process)
    await haproxy.set_route(port, http(a))
    # (issued, done, upstream name): the route in effect from `done` on, possibly from `issued`
    switches: list[tuple[float, float, str]] = [(0.0, 0.0, "a")]

    async def switch(load: Load) -> None:
        for upstream in [b, a, b, a, b, a]:
            await load.until(CLIENTS * 3)
            issued = time.monotonic()
            await haproxy.set_route(port, http(upstream))
            switches.append((issued, time.monotonic(), upstream.name))

    load = await under_load(port, switch)
    assert load.failures == []
    # Every answer came from an upstream routed at some moment between its request and its end.
    for started, ended, name in load.answers:
        possible = {
            switch_name
            for (issued, _, switch_name), (_, next_done, _) in zip(
                switches, [*switches[1:], (0.0, float("inf"), "")], strict=True
            )
            if issued <= ended and next_done >= started
        }
        assert name in possible, (started, ended, name, switches)
    # Both upstreams served, in turn.
    assert {name for _, _, name in load.answers} == {"a", "b"}
    print(f"{len(load.answers)} requests across {len(switches) - 1} switches, 0 failed")


async def test_a_reload_under_load_fails_nothing(
    proxy_process: RunningProxy, haproxy: HAProxy, upstreams: tuple[Upstream, Upstream]
) -> None:
    a, _ = upstreams
    port = endpoint(proxy_process)
    await haproxy.set_route(port, http(a))
    master = proxy_process.process.pid

    async def worker() -> str:
        info = await haproxy.command("info", "show info")
        return next(line for line in info.splitlines() if line.startswith("Pid: "))

    async def reload_twice(load: Load) -> None:
        for _ in range(2):
            await load.until(CLIENTS * 5)
            before = await worker()
            await proxy_process.process.reload()

            async def new_worker(before: str = before) -> bool:
                return await worker() != before

            await wait_for(new_worker, "a new worker", within_s=10, every_s=0.02)
            await load.until(CLIENTS * 5)

    load = await under_load(port, reload_twice)
    assert load.failures == []
    assert proxy_process.process.pid == master  # reloaded, not restarted
    assert set(await haproxy.routes()) == {port}  # the new workers read the map file
    print(f"{len(load.answers)} requests across 2 reloads, 0 failed")


async def test_a_killed_haproxy_is_restarted_with_the_routes_of_the_map_file(
    proxy_process: RunningProxy, haproxy: HAProxy, upstreams: tuple[Upstream, Upstream]
) -> None:
    a, b = upstreams
    port, other = endpoint(proxy_process), endpoint(proxy_process, 1)
    await haproxy.set_route(port, http(a))
    await haproxy.set_route(other, http(b))
    await haproxy.remove_route(other)
    routes = await haproxy.routes()
    master = proxy_process.process.pid
    assert master is not None

    os.kill(master, signal.SIGKILL)

    async def back() -> bool:
        pid = proxy_process.process.pid
        if pid is None or pid == master:
            return False
        try:
            await haproxy.ping()
        except ProxyFault:
            return False
        return True

    await wait_for(back, "HAProxy restarted", within_s=15, every_s=0.02)
    assert proxy_process.process.starts == 2
    assert await haproxy.routes() == routes
    assert (await get(port)).text == "a"
    assert await refused(other)


async def test_a_held_route_holds_requests_until_a_route_is_set_then_503_after_the_hold(
    proxy_process: RunningProxy, haproxy: HAProxy, upstreams: tuple[Upstream, Upstream]
) -> None:
    _, b = upstreams
    port = endpoint(proxy_process)
    await haproxy.set_route(port, Route("http", HELD, time.time(), PROJECT))
    held = asyncio.create_task(get(port))
    done, _ = await asyncio.wait({held}, timeout=0.5)
    assert not done  # waiting, not refused
    await haproxy.set_route(port, http(b))
    response = await asyncio.wait_for(held, 5)
    assert (response.status_code, response.text) == (200, "b")

    await haproxy.set_route(port, Route("http", HELD, time.time(), PROJECT))
    started = time.monotonic()
    response = await get(port)
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert proxy_process.config.hold_s - 0.1 <= elapsed < proxy_process.config.hold_s + 2


async def test_a_held_tcp_route_holds_connections_then_closes_them(
    proxy_process: RunningProxy, haproxy: HAProxy, upstreams: tuple[Upstream, Upstream]
) -> None:
    a, _ = upstreams
    port = endpoint(proxy_process)
    await haproxy.set_route(port, Route("tcp", HELD, time.time(), PROJECT))
    held = asyncio.create_task(get(port))
    done, _ = await asyncio.wait({held}, timeout=0.5)
    assert not done
    await haproxy.set_route(port, Route("tcp", a.address, time.time(), PROJECT))
    assert (await asyncio.wait_for(held, 5)).text == "a"

    await haproxy.set_route(port, Route("tcp", HELD, time.time(), PROJECT))
    started = time.monotonic()
    assert await refused(port)
    assert time.monotonic() - started >= proxy_process.config.hold_s - 0.1


async def test_in_flight_counts_a_request_on_its_upstream_until_it_ends(
    proxy_process: RunningProxy, haproxy: HAProxy, upstreams: tuple[Upstream, Upstream]
) -> None:
    a, b = upstreams
    port = endpoint(proxy_process)
    await haproxy.set_route(port, http(a))
    assert (await get(port)).text == "a"  # an idle kept-alive upstream connection is no request
    assert await haproxy.in_flight() == {}

    slow = asyncio.create_task(get(port, "/hold"))

    async def one_in_flight() -> bool:
        return await haproxy.in_flight() == {a.address: 1}

    await wait_for(one_in_flight, "one request in flight on a", within_s=5, every_s=0.02)
    # Switched meanwhile: the request in flight stays counted on a (draining) until it ends.
    await haproxy.set_route(port, http(b))
    assert (await get(port)).text == "b"
    assert await haproxy.in_flight() == {a.address: 1}
    a.release.set()
    assert (await slow).text == "a"

    async def none_in_flight() -> bool:
        return await haproxy.in_flight() == {}

    await wait_for(none_in_flight, "nothing in flight", within_s=5, every_s=0.02)


async def test_an_admin_socket_that_is_down_is_a_proxy_fault_after_retries(
    proxy_process: RunningProxy, haproxy: HAProxy
) -> None:
    await proxy_process.process.stop(grace_s=2)
    before = calls("routes", "unreachable")
    with pytest.raises(ProxyFault, match=r"routes: .* did not answer"):
        await haproxy.routes()
    assert calls("routes", "unreachable") == before + 1


async def test_a_silent_admin_socket_is_tried_again_then_a_proxy_fault() -> None:
    directory = Path(tempfile.mkdtemp(prefix="tether-silent-", dir="/tmp"))
    path = directory / "admin.sock"
    connections = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.read()
        writer.close()

    server = await asyncio.start_unix_server(silent, str(path))
    port = free_port()
    config = ProxyConfig(directory, path, "127.0.0.1", port, port, 1.0)
    client = HAProxy(config, timeout_s=0.2, attempts=3)
    try:
        with pytest.raises(ProxyFault, match=r"3 tries.*no answer within 0.2 s"):
            await client.ping()
        assert connections == 3
    finally:
        server.close()
        await server.wait_closed()
        shutil.rmtree(directory, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proxy_settings(port_range: PortRange, directory: Path) -> Settings:
    return Settings(
        port_range=f"{port_range.first}-{port_range.last}",
        proxy_dir=str(directory),
        proxy_socket=str(directory / "admin.sock"),
        proxy_hold_s=1,
    )


async def test_a_second_proxy_on_the_same_ports_fails_to_start_and_the_first_serves_on(
    proxy_process: RunningProxy, port_range: PortRange, upstreams: tuple[Upstream, Upstream]
) -> None:
    a, _ = upstreams
    await proxy_process.client.set_route(port_range.first, http(a))
    directory = Path(tempfile.mkdtemp(prefix="tether-haproxy-twin-", dir="/tmp"))
    twin = HAProxyProcess(
        replace(proxy_process.process.config, directory=directory, socket=directory / "admin.sock")
    )
    try:
        with pytest.raises(ProxyNotStarted):
            await twin.start(ready_within_s=5.0)
    finally:
        await twin.stop(grace_s=1.0)
        shutil.rmtree(directory, ignore_errors=True)
    for _ in range(20):  # new connections, each: none may land on a second proxy
        assert (await get(port_range.first)).text == "a"


async def test_the_proxy_of_tether_up_serves_until_its_block_ends(
    port_range: PortRange, upstreams: tuple[Upstream, Upstream]
) -> None:
    a, _ = upstreams
    directory = Path(tempfile.mkdtemp(prefix="tether-up-proxy-", dir="/tmp"))
    settings = proxy_settings(port_range, directory)
    client = HAProxy(proxy_config(settings), attempts=1)
    try:
        async with running_proxy(settings):
            await client.set_route(port_range.first, http(a))
            assert (await get(port_range.first)).text == "a"
        with pytest.raises(ProxyFault):
            await client.ping()
        assert await refused(port_range.first)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_tether_proxy_runs_in_the_foreground_reloads_on_sighup_and_stops_on_sigterm(
    port_range: PortRange, upstreams: tuple[Upstream, Upstream]
) -> None:
    a, _ = upstreams
    directory = Path(tempfile.mkdtemp(prefix="tether-proxy-cmd-", dir="/tmp"))
    settings = proxy_settings(port_range, directory)
    client = HAProxy(proxy_config(settings), attempts=1)
    env = {
        **os.environ,
        "TETHER_PORT_RANGE": settings.port_range,
        "TETHER_PROXY_DIR": settings.proxy_dir,
        "TETHER_PROXY_SOCKET": settings.proxy_socket,
        "TETHER_LOG_FORMAT": "json",
    }
    server = await tether_proxy(env, output=asyncio.subprocess.PIPE)
    try:
        await answering(client)
        await client.set_route(port_range.first, http(a))
        before = await client.command("info", "show info")
        server.send_signal(signal.SIGHUP)

        async def reloaded() -> bool:
            return await client.command("info", "show info") != before

        await wait_for(reloaded, "a reload", within_s=10, every_s=0.02)
        assert (await get(port_range.first)).text == "a"  # the map file survived the reload
        server.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            output, _ = await server.communicate()
        assert server.returncode == 0, output.decode()
        assert await refused(port_range.first)
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
        shutil.rmtree(directory, ignore_errors=True)


async def test_no_haproxy_outlives_a_killed_tether_proxy(port_range: PortRange) -> None:
    directory = Path(tempfile.mkdtemp(prefix="tether-proxy-cmd-", dir="/tmp"))
    settings = proxy_settings(port_range, directory)
    client = HAProxy(proxy_config(settings), attempts=1)
    env = {
        **os.environ,
        "TETHER_PORT_RANGE": settings.port_range,
        "TETHER_PROXY_DIR": settings.proxy_dir,
        "TETHER_PROXY_SOCKET": settings.proxy_socket,
    }
    server = await tether_proxy(env, output=asyncio.subprocess.DEVNULL)
    try:
        await answering(client)
        server.kill()
        await server.wait()

        async def gone() -> bool:
            return not await answers(client)

        await wait_for(gone, "HAProxy gone with its supervisor", within_s=10, every_s=0.02)
        assert await refused(port_range.first)
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
        shutil.rmtree(directory, ignore_errors=True)
