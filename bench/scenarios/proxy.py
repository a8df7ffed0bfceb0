"""9. The proxy: what HAProxy in front of a project costs, and what a switch costs.

One project (the test workload, an HTTP health check every 0.1 s) behind a real HAProxy
(`tether.operator.haproxy`, configured as `tether proxy` runs it) and a `tether operator` process
routing it, on loopback.
- Latency: one client, a request through the proxy (the project's endpoint) and one straight to
  the container's own published port, alternately; each on a connection of its own, since the
  workload (busybox httpd) closes every connection after its answer; p50/p99 of each and the
  p50 overhead. And, before the operator runs, the same with keep-alive connections to a
  keep-alive upstream (tests/upstream.py) routed by hand: what the proxy adds to a request
  when no connection is opened for it.
- Throughput: `wrk` with 16 connections (a connection a request, as the workload answers) for a
  window on each, the windows alternating (proxy, direct, ...); requests/s, p50/p99 and errors.
- Switches: a deploy of the next version, start-first and stop-first alternately, each under
  16 keep-alive clients that never retry (tests/httpload.py); from just before the deploy's
  write to the first answer of the new version through the endpoint, failed requests, and the
  longest time without any answer. Beside them, the engine floor: a container of the same image
  created and started by direct aiodocker calls, to its first answer on its own port.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiodocker

from docker_floor import container_config, wait_ready
from harness import IMAGE, OPERATOR_ROLE, REPO, Run, load_average
from measures import ms, summary
from tether.api.models import DeploymentSpec, HttpCheck, Strategy
from tether.operator.haproxy.admin import HAProxy
from tether.operator.haproxy.config import ProxyConfig
from tether.operator.haproxy.process import HAProxyProcess
from tether.operator.routing import Route
from tether_side import OWNER, Tether, docker_url

sys.path.insert(0, str(REPO / "tests"))
import itertools

from httpload import Load, Tally  # the load generator of the tests
from upstream import Upstream  # the proxy tests' keep-alive upstream

TETHER = str(Path(sys.executable).parent / "tether")
NAME = "px"
CLIENTS = 16
STRATEGIES: tuple[Strategy, ...] = ("start-first", "stop-first")
# busybox httpd (the workload) closes every connection after its answer: the same on both paths.
REQUEST = b"GET /version HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
KEEPALIVE_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def spec(release: int, strategy: Strategy) -> DeploymentSpec:
    return DeploymentSpec(
        image=IMAGE,
        port=8080,
        env={"RELEASE": str(release)},
        health=HttpCheck(type="http", path="/healthz", interval_s=0.1, timeout_s=1),
        stop_grace_s=2,
        drain_timeout_s=5,
        strategy=strategy,
    )


# Latency and throughput


async def _one(port: int) -> float:
    """One request on a connection of its own, to the end of the answer (the server closes)."""
    began = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(REQUEST)
        answer = await reader.read()
    finally:
        writer.close()
    if not answer.startswith(b"HTTP/1.") or b" 200 " not in answer.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"127.0.0.1:{port} answered {answer[:60]!r}")
    return time.perf_counter() - began


async def _keepalive_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    began = time.perf_counter()
    writer.write(KEEPALIVE_REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    return time.perf_counter() - began


async def keepalive_latency(config: ProxyConfig, requests: int) -> dict[str, Any]:
    """Before the operator runs: a keep-alive upstream (tests/upstream.py) on a port of the
    proxy's routed by hand, one keep-alive client on each path, a request on each in turn.
    What the proxy alone adds when no connection is opened per request."""
    port = config.last_port
    upstream = await Upstream("bench").start()
    admin = HAProxy(config)
    opened: list[asyncio.StreamWriter] = []
    times: dict[str, list[float]] = {"direct": [], "proxy": []}
    try:
        await admin.set_route(port, Route("http", upstream.address, time.time(), "bench"))
        clients = {}
        for label, to in (("direct", upstream.port), ("proxy", port)):
            reader, writer = await asyncio.open_connection("127.0.0.1", to)
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            opened.append(writer)
            clients[label] = (reader, writer)
        for _ in range(requests):
            for label, (reader, writer) in clients.items():
                times[label].append(await _keepalive_one(reader, writer))
    finally:
        for writer in opened:
            writer.close()
        await admin.remove_route(port)
        await admin.close()
        await upstream.close()
    return {label: summary(ms(values)) for label, values in times.items()}


async def latency(direct: int, proxied: int, requests: int) -> dict[str, Any]:
    """One client, a request to each in turn."""
    times: dict[str, list[float]] = {"direct": [], "proxy": []}
    for _ in range(requests):
        times["direct"].append(await _one(direct))
        times["proxy"].append(await _one(proxied))
    return {label: summary(ms(values)) for label, values in times.items()}


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(text: str) -> dict[str, float]:
    """Requests/s, p50/p99 latency (ms) and errors from `wrk --latency`'s report."""

    def latency_ms(percent: str) -> float:
        found = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
        if found is None:
            raise ValueError(f"no {percent}% latency in wrk's report: {text[-300:]}")
        return float(found[1]) * _UNITS[found[2]]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk's report: {text[-300:]}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return {
        "rps": float(rps[1]),
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
        "errors": errors + (int(non_2xx[1]) if non_2xx else 0),
    }


async def throughput(direct: int, proxied: int, window_s: int, windows: int) -> dict[str, Any]:
    """`wrk` windows on each, alternating; every window's figures."""
    runs: dict[str, list[dict[str, float]]] = {"direct": [], "proxy": []}
    for n in range(windows * 2):
        label, port = ("proxy", proxied) if n % 2 == 0 else ("direct", direct)
        argv = ["wrk", "-t2", f"-c{CLIENTS}", f"-d{window_s}s", "--latency"]
        argv += ["-H", "Connection: close"]  # as the workload answers: a connection a request
        done = await asyncio.to_thread(
            subprocess.run,
            [*argv, f"http://127.0.0.1:{port}/version"],
            capture_output=True,
            text=True,
            check=True,
        )
        runs[label].append(parse_wrk(done.stdout))
    return runs


# Switches


async def _serving_alone(tether: Tether, version: int, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        snap = await tether.store.desired(NAME)
        status = snap.status if snap is not None else None
        if (
            snap is not None
            and status is not None
            and status.observed_generation == snap.project.generation
            and status.serving_version == version
            and len(await tether.containers(NAME)) == 1
        ):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{NAME} did not serve v{version} alone within {within_s} s")


def _longest_gap_s(tally: Tally, since: float, until: float) -> float:
    times = [since] + [t for t, _ in tally.answers if since <= t <= until] + [until]
    return max(b - a for a, b in itertools.pairwise(times))


async def switch(tether: Tether, port: int, version: int, strategy: Strategy) -> dict[str, Any]:
    """Deploy `version` under load; write → first answer of it, failures, the longest gap."""
    load = Load("127.0.0.1", port, clients=CLIENTS)
    load.start()
    try:
        await load.wait_for_answers(200)
        began = time.monotonic()
        await tether.deploy(NAME, spec=spec(version, strategy))
        await _serving_alone(tether, version)
        settled = time.monotonic()
        await load.wait_for_answers(200)
    finally:
        tally = await load.stop()
    first = min((t for t, v in tally.answers if v == str(version) and t >= began), default=None)
    return {
        "strategy": strategy,
        "write_to_serving_s": None if first is None else first - began,
        "failed": len(tally.failures),
        "failures": tally.failures[:5],
        "answers": len(tally.answers),
        "longest_gap_s": _longest_gap_s(tally, began, settled),
    }


async def floor(run: Run, docker: aiodocker.Docker) -> float:
    """Seconds from creating a container of the image (directly) to its first answer."""
    config = container_config(0, run.labels("proxy"))
    config["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"] = ""  # Docker chooses
    began = time.time()
    container = await docker.containers.create(config)
    try:
        await container.start()
        shown = await container.show()
        [bound] = shown["NetworkSettings"]["Ports"]["8080/tcp"]
        answered = await wait_ready(int(bound["HostPort"]))
    finally:
        await container.delete(force=True)
    return answered - began


# The scenario


def _operator_env(run: Run, database: Any, ports: Any, config: ProxyConfig) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.pop("DOCKER_HOST", None)
    env.update(
        TETHER_DATABASE_URL=database.dsn(OPERATOR_ROLE),
        TETHER_DOCKER_URL=docker_url(),
        TETHER_INSTALLATION_ID=run.installation("proxy"),
        TETHER_PORT_RANGE=f"{ports.first}-{ports.last}",
        TETHER_PUBLISH_ADDRESS="127.0.0.1",
        TETHER_LOG_FORMAT="json",
        TETHER_OPERATOR_HOST="127.0.0.1",
        TETHER_OPERATOR_PORT="0",
        TETHER_PROXY_DIR=str(config.directory),
        TETHER_PROXY_SOCKET=str(config.socket),
    )
    return env


async def measure(
    run: Run,
    docker: aiodocker.Docker,
    *,
    requests: int,
    window_s: int,
    windows: int,
    switches: int,
) -> dict[str, Any]:
    load_before = load_average()
    database = await run.database("proxy")
    ports = run.ports(4)
    directory = Path(tempfile.mkdtemp(prefix="tether-bench-proxy-", dir="/tmp"))
    config = ProxyConfig(
        directory, directory / "admin.sock", "127.0.0.1", ports.first, ports.last, hold_s=10.0
    )
    proxy = HAProxyProcess(config)
    tether = await Tether.open(database, ports, docker, run.installation("proxy"))
    operator = None
    try:
        await proxy.start()
        keepalive = await keepalive_latency(config, requests)
        env = _operator_env(run, database, ports, config)
        operator = run.spawn([TETHER, "operator"], env=env, log_name="operator-proxy.log")
        await tether.store.create_project(NAME, OWNER)
        await tether.deploy(NAME, spec=spec(1, "start-first"))
        await _serving_alone(tether, 1)
        snap = await tether.store.desired(NAME)
        assert snap is not None
        assert snap.status is not None
        assert snap.status.route is not None
        endpoint, upstream = snap.project.host_port, int(snap.status.route.rpartition(":")[2])
        results: dict[str, Any] = {
            "haproxy": proxy_version(),
            "latency": await latency(upstream, endpoint, requests),
            "keepalive_latency": keepalive,
            "throughput": await throughput(upstream, endpoint, window_s, windows),
            "clients": CLIENTS,
        }
        rounds: list[dict[str, Any]] = []
        floors: list[float] = []
        version = 1
        for n in range(switches):
            for strategy in STRATEGIES[n % 2 :] + STRATEGIES[: n % 2]:
                version += 1
                rounds.append(await switch(tether, endpoint, version, strategy))
            floors.append(await floor(run, docker))
        results["switches"] = rounds
        results["floor_s"] = floors
        results["load_average"] = [load_before, load_average()]
        return results
    finally:
        if operator is not None:
            await run.stop_child(operator)
        await tether.close()
        await proxy.stop(grace_s=2)
        await run.remove_containers("proxy")
        shutil.rmtree(directory, ignore_errors=True)


def proxy_version() -> str:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    found = re.search(r"version (\S+)", done.stdout)
    return found[1] if found else "unknown"
