"""Health and metrics endpoints, as the servers compose them (`tether.cli.server.serve`, in-process,
and `tether operator` as a process): `/healthz`, `/readyz` that names what failed, and `/metrics`
whose figures move during a deploy."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import free_port, remove_containers, wait_for

from tether.api import probes
from tether.api.migrator import available, migrate
from tether.api.settings import Settings
from tether.api.store import PortRange, Store
from tether.cli.readiness import OperatorReadiness
from tether.cli.server import bind, serve
from tether.cli.signals import Stopper

TETHER = str(Path(sys.executable).parent / "tether")
WORKLOAD = "tether-test/workload:latest"
SPEC = {
    "image": WORKLOAD,
    "port": 8080,
    "health": {"type": "http", "path": "/healthz"},
    "ready_deadline_s": 30,
    "stop_grace_s": 2,
}
NO_DOCKER = "unix:///nonexistent/docker.sock"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


def samples(text: str, name: str) -> list[dict[str, str]]:
    return [
        dict(s.labels)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


@dataclass
class Running:
    settings: Settings
    api: str | None  # the API's URL
    endpoint: str | None  # the operator's health and metrics endpoint


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
def installation() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def start(
    database_url: str, port_range: PortRange, installation: str, proxy_process: Any
) -> AsyncIterator[Start]:
    """Servers as `tether api` / `tether operator` / `tether up` compose them, in this process, on
    loopback ports of their own; stopped (and their containers removed) when the test ends."""
    running: list[tuple[Stopper, asyncio.Task[None], Store, list[socket.socket]]] = []

    async def start_(
        *, api: bool = True, operator: bool = True, store: Store | None = None, **settings: Any
    ) -> Running:
        configured = Settings(
            database_url=database_url,
            installation_id=installation,
            port_range=f"{port_range.first}-{port_range.last}",
            lease_ttl_s=3,
            log_level="warning",
            proxy_dir=str(proxy_process.config.directory),
            proxy_socket=str(proxy_process.config.socket),
            **settings,
        )
        if store is None:
            store = await Store.connect(configured.database_url, configured.ports)
        api_sock = bind("127.0.0.1", 0) if api else None
        endpoint_sock = bind("127.0.0.1", 0) if operator and not api else None
        stopper = Stopper()
        task = asyncio.create_task(
            serve(
                configured,
                store,
                stopper,
                sock=api_sock,
                with_operator=operator,
                operator_sock=endpoint_sock,
            )
        )
        socks = [s for s in (api_sock, endpoint_sock) if s is not None]
        running.append((stopper, task, store, socks))
        urls = [
            f"http://127.0.0.1:{s.getsockname()[1]}" if s else None
            for s in (api_sock, endpoint_sock)
        ]

        async def answering() -> bool:
            async with httpx.AsyncClient(timeout=2) as http:
                for url in urls:
                    if url is None:
                        continue
                    try:
                        await http.get(f"{url}/healthz")
                    except httpx.HTTPError:
                        if task.done():
                            task.result()
                        return False
            return True

        await wait_for(answering, "the servers to answer", within_s=10)
        return Running(configured, urls[0], urls[1])

    yield start_
    for stopper, task, store, socks in running:
        stopper.request()
        async with asyncio.timeout(30):
            await asyncio.wait({task})
        await store.close()
        for sock in socks:
            sock.close()
    docker = aiodocker.Docker()
    try:
        await remove_containers(docker, installation)
    finally:
        await docker.close()


async def get(url: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=10, headers=headers) as http:
        return await http.get(url)


# The API's /healthz and /readyz


def test_served_connections_send_small_writes_at_once() -> None:
    """uvicorn writes a response's head and body separately: under Nagle's algorithm the body
    waits for the client's delayed ACK, ~40 ms on every request. Accepted connections inherit
    TCP_NODELAY from the listening socket."""
    with bind("127.0.0.1", 0) as listening, socket.socket() as client:
        client.connect(listening.getsockname()[:2])
        accepted, _ = listening.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


async def test_api_is_alive_and_ready(start: Start) -> None:
    running = await start(operator=False)
    alive = await get(f"{running.api}/healthz")
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    ready = await get(f"{running.api}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": True, "migrations": True},
        "message": "ready",
        "info": {},
    }
    assert ready.headers["cache-control"] == "no-store"


async def test_readyz_names_pending_migrations_until_they_are_applied(
    start: Start, new_database: Callable[[], Awaitable[str]], port_range: PortRange
) -> None:
    # A database with only the first migration: the second one is pending.
    dsn = await new_database()
    [first, *later] = available()
    assert later, "this test needs at least two migrations"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(first.sql)
        await conn.execute(
            "CREATE TABLE tether_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now());"
        )
        await conn.execute(
            "INSERT INTO tether_migrations (version, name) VALUES ($1, $2)",
            first.version,
            first.name,
        )
    finally:
        await conn.close()
    running = await start(operator=False, store=await Store.connect(dsn, port_range))

    refused = await get(f"{running.api}/readyz")
    assert refused.status_code == 503
    assert refused.headers["retry-after"]
    body = refused.json()
    assert body["status"] == "not_ready"
    assert body["checks"] == {"database": True, "migrations": False}
    for migration in later:
        assert f"{migration.version:04d}_{migration.name}" in body["message"]
    assert "`tether migrate`" in body["message"]

    await migrate(dsn)
    ready = await get(f"{running.api}/readyz")
    assert ready.status_code == 200, ready.text


async def test_readyz_names_an_unreachable_database(start: Start, port_range: PortRange) -> None:
    dsn = f"postgresql://tether:secret@127.0.0.1:{free_port()}/tether"
    running = await start(operator=False, store=await Store.connect(dsn, port_range))
    began = time.monotonic()
    refused = await get(f"{running.api}/readyz")
    assert time.monotonic() - began < probes.CHECK_TIMEOUT_S + 2
    assert refused.status_code == 503
    body = refused.json()
    assert body["checks"] == {"database": False, "migrations": False}
    assert "database: unreachable (ConnectionRefusedError)" in body["message"]
    assert "secret" not in refused.text
    # Alive all the same: a restart would not bring the database back.
    assert (await get(f"{running.api}/healthz")).status_code == 200


# The operator's endpoint (`tether operator`) and the operator's checks under `tether up`


async def test_operator_endpoint_is_ready_with_docker_and_both_triggers(start: Start) -> None:
    running = await start(api=False)
    assert running.endpoint is not None
    alive = await get(f"{running.endpoint}/healthz")
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})

    async def ready() -> httpx.Response | None:
        answer = await get(f"{running.endpoint}/readyz")
        return answer if answer.status_code == 200 else None

    answer = await wait_for(ready, "the operator's /readyz to answer 200", within_s=20)
    body = answer.json()
    assert body["checks"] == {
        "docker": True,
        "docker_events": True,
        "notify_listener": True,
        "proxy": True,
    }
    info = body["info"]
    assert (info["active"], info["lease_holder"], info["lease_epoch"]) == (
        True,
        info["holder"],
        info["epoch"],
    )
    assert info["epoch"] >= 1
    metrics = await get(f"{running.endpoint}/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "tether_passes_total" in metrics.text
    assert "tether_queue_depth" in metrics.text
    assert "tether_operator_active 1.0" in metrics.text
    assert f"tether_lease_epoch {float(info['epoch'])}" in metrics.text
    assert (await get(f"{running.endpoint}/nope")).status_code == 404


async def test_operator_endpoint_names_what_is_down(start: Start) -> None:
    running = await start(api=False, docker_url=NO_DOCKER)

    async def settled() -> dict[str, Any] | None:
        answer = await get(f"{running.endpoint}/readyz")
        assert answer.status_code == 503, answer.text
        body: dict[str, Any] = answer.json()
        return body if body["checks"]["notify_listener"] else None

    body = await wait_for(settled, "the NOTIFY listener to connect", within_s=20)
    assert body["status"] == "not_ready"
    assert body["checks"] == {
        "docker": False,
        "docker_events": False,
        "notify_listener": True,
        "proxy": True,
    }
    assert "docker: Docker does not answer" in body["message"]
    assert "docker_events: not following Docker's events" in body["message"]
    assert "notify_listener" not in body["message"]


async def test_up_readyz_includes_the_operator(start: Start) -> None:
    running = await start(api=True, operator=True)

    async def ready() -> dict[str, Any] | None:
        answer = await get(f"{running.api}/readyz")
        return answer.json() if answer.status_code == 200 else None

    body = await wait_for(ready, "the API's /readyz to answer 200", within_s=20)
    assert body["checks"] == {
        "database": True,
        "migrations": True,
        "operator.docker": True,
        "operator.docker_events": True,
        "operator.notify_listener": True,
        "operator.proxy": True,
    }
    assert body["info"]["operator.active"] is True
    assert body["info"]["operator.epoch"] == body["info"]["operator.lease_epoch"]


async def test_up_readyz_is_not_ready_without_docker(start: Start) -> None:
    running = await start(api=True, operator=True, docker_url=NO_DOCKER)
    answer = await get(f"{running.api}/readyz")
    assert answer.status_code == 503
    body = answer.json()
    assert body["checks"]["database"]
    assert body["checks"]["migrations"]
    assert body["checks"]["operator.docker"] is False
    assert "operator.docker: Docker does not answer" in body["message"]


class Hanging:
    """An operator whose readiness never answers (a Docker call that hangs)."""

    async def readiness(self) -> dict[str, bool]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Failing:
    async def readiness(self) -> dict[str, bool]:
        raise RuntimeError("boom")


async def test_operator_checks_are_bounded_in_time_and_never_raise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(probes, "CHECK_TIMEOUT_S", 0.2)
    not_started = await probes.evaluate([OperatorReadiness()])
    assert not_started.status == "not_ready"
    assert "docker: the operator has not started yet" in not_started.message

    checks = OperatorReadiness()
    checks.started(Hanging())  # type: ignore[arg-type]
    began = time.monotonic()
    hung = await probes.evaluate([checks])
    assert time.monotonic() - began < 2
    assert hung.checks == {
        "docker": False,
        "docker_events": False,
        "notify_listener": False,
        "proxy": False,
    }
    assert "did not answer within 0.2 s" in hung.message

    checks.started(Failing())  # type: ignore[arg-type]
    failed = await probes.evaluate([checks])
    assert failed.status == "not_ready"
    assert "RuntimeError: boom" in failed.message


@pytest.mark.docker
async def test_tether_operator_process_serves_its_endpoint(
    database_url: str,
    port_range: PortRange,
    installation: str,
    tmp_path: Path,
    proxy_process: Any,
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TETHER_PROXY_DIR": str(proxy_process.config.directory),
        "TETHER_PROXY_SOCKET": str(proxy_process.config.socket),
        "TETHER_DATABASE_URL": database_url,
        "TETHER_INSTALLATION_ID": installation,
        "TETHER_PORT_RANGE": f"{port_range.first}-{port_range.last}",
        "TETHER_OPERATOR_PORT": str(port),
        "TETHER_LOG_FORMAT": "json",
    }
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            TETHER, "operator", env=env, stdout=out, stderr=out
        )
    try:

        async def ready() -> bool:
            try:
                return (await get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
            except httpx.HTTPError:
                assert process.returncode is None, log.read_text()
                return False

        await wait_for(ready, "tether operator's /readyz", within_s=30)
        metrics = await get(f"http://127.0.0.1:{port}/metrics")
        assert "tether_docker_calls_total" in metrics.text

        # A second operator on the same endpoint fails at once, and says what to set.
        second = await asyncio.create_subprocess_exec(
            TETHER,
            "operator",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(20):
            out, err = await second.communicate()
        assert second.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in err.decode()
        assert "TETHER_OPERATOR_PORT" in err.decode()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await process.wait()
    assert code == 0, log.read_text()
    assert f"health and metrics on http://127.0.0.1:{port}" in log.read_text()


# /metrics during a deploy


@pytest.mark.docker
async def test_metrics_move_during_a_deploy(start: Start, store: Store) -> None:
    token = await store.create_token("alice")
    # A quick resync: projects by phase are counted at each one.
    running = await start(api=True, operator=True, store=store, resync_interval_s=0.5)
    api = running.api
    before = (await get(f"{api}/metrics")).text

    async with httpx.AsyncClient(
        base_url=str(api), headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as http:
        assert (await http.post("/v1/projects", json={"name": "shop"})).status_code == 201
        deployed = await http.post("/v1/projects/shop/deployments", json=SPEC)
        assert deployed.status_code == 201, deployed.text

        async def ready() -> bool:
            status = (await http.get("/v1/projects/shop/status")).json()
            return any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"])

        await wait_for(ready, "shop Ready")
        assert (await http.get("/v1/projects/ghost")).status_code == 404
        # A method the route does not serve (httptools refuses unknown methods with 400 before
        # the application sees them).
        assert (await http.request("PATCH", "/v1/projects")).status_code == 405
        assert (await http.get("/no/such/route/123")).status_code == 404

        async def counted() -> str | None:
            text = (await get(f"{api}/metrics")).text
            return text if sample(text, "tether_projects", phase="Running") == 1 else None

        after = await wait_for(counted, "a resync to count shop as Running", within_s=10)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("tether_passes_total", result="converged") >= 1
    assert moved("tether_pass_duration_seconds_count") >= 1
    assert moved("tether_pass_duration_seconds_sum") > 0
    assert moved("tether_convergence_seconds_count") >= 1
    assert moved("tether_docker_calls_total", operation="create", status="ok") >= 1
    assert moved("tether_docker_calls_total", operation="start", status="ok") >= 1
    assert moved("tether_docker_calls_total", operation="list", status="ok") >= 1
    assert "tether_queue_depth" in after
    assert "tether_retries_total" in after
    post = {"method": "POST", "route": "/v1/projects/{name}/deployments", "status": "201"}
    assert moved("tether_api_requests_total", **post) == 1
    one = {"method": "GET", "route": "/v1/projects/{name}", "status": "404"}
    assert moved("tether_api_requests_total", **one) == 1
    patch = {"method": "PATCH", "route": "/v1/projects", "status": "405"}
    assert moved("tether_api_requests_total", **patch) == 1
    assert moved("tether_api_requests_total", method="GET", route="unmatched", status="404") == 1
    status = {"method": "GET", "route": "/v1/projects/{name}/status", "status": "200"}
    assert moved("tether_api_requests_total", **status) >= 1
    assert moved("tether_api_request_duration_seconds_count", method="POST", route=post["route"])
    # Bounded labels: templates, never a project's name or a raw path.
    routes = {labels["route"] for labels in samples(after, "tether_api_requests_total")}
    assert not any("shop" in r or "ghost" in r or "123" in r for r in routes), routes
