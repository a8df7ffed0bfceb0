"""The scenario harness: the whole stack for one test (the HTTP API on uvicorn and an operator on a
real Postgres, the operator talking to Docker through the fault-injecting proxy), the people using
it (the `tether` CLI in-process, and a web console on the HTTP API), and a dockerd of a test's own
that it may restart. The fixtures that build them are in conftest.py beside this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import httpx
import pytest
import structlog
from cliuser import Cli
from faultproxy import FaultProxy
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from support import project_containers, remove_containers, serving, wait_for

from tether.api.app import create_app
from tether.api.models import ConditionType, DesiredSnapshot, Event
from tether.api.settings import Settings
from tether.api.store import PortRange, Store
from tether.operator.engine.docker.driver import DockerDriver
from tether.operator.labels import LABEL_RESTART, LABEL_VERSION
from tether.operator.runtimes import engine_runtime
from tether.operator.service import Operator

WORKLOAD = "tether-test/workload:latest"
HEALTHY_ARGS = ("--image", WORKLOAD, "--port", "8080", "--health-path", "/healthz")


def spec(**update: Any) -> dict[str, Any]:
    """A healthy deployment spec, as the web console sends it."""
    return {
        "image": WORKLOAD,
        "port": 8080,
        "health": {"type": "http", "path": "/healthz", "interval_s": 0.5, "timeout_s": 1},
        "stop_grace_s": 2,
        "ready_deadline_s": 30,
        **update,
    }


# People: the CLI in-process, and a second client (a web console) on the HTTP API


class Recorder:
    """ASGI middleware keeping (method, path, status) of every answer of the API."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.answers: list[tuple[str, str, int]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.answers.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, recording)


# The stack


class Projects:
    """A stack's projects as its tests deploy and read them: through the web console (the HTTP
    API) and the operator's store. Mixed into each runtime's stack, which has both."""

    store: Store
    console: httpx.AsyncClient

    async def snapshot(self, name: str) -> DesiredSnapshot:
        found = await self.store.desired(name)
        assert found is not None, f"no project {name}"
        return found

    async def events(self, name: str) -> list[Event]:
        answer = await self.console.get(f"/v1/projects/{name}/events", params={"limit": 1000})
        assert answer.status_code == 200, answer.text
        return [Event.model_validate(e) for e in answer.json()]

    async def deploy(self, name: str, **update: Any) -> None:
        """Create (if needed) and deploy through the console."""
        created = await self.console.post("/v1/projects", json={"name": name})
        assert created.status_code in (200, 201), created.text
        answer = await self.console.post(f"/v1/projects/{name}/deployments", json=spec(**update))
        assert answer.status_code == 201, answer.text

    # What "done" looks like

    async def converged(self, name: str) -> DesiredSnapshot | None:
        snap = await self.snapshot(name)
        status = snap.status
        if status is None or status.observed_generation != snap.project.generation:
            return None
        return snap if condition(snap, ConditionType.RECONCILING) == "False" else None

    async def ready(self, name: str) -> DesiredSnapshot | None:
        snap = await self.converged(name)
        return snap if snap and condition(snap, ConditionType.READY) == "True" else None

    async def converged_stopped(self, name: str) -> DesiredSnapshot | None:
        """Converged on a desire to be stopped (what runs is each stack's to check)."""
        snap = await self.converged(name)
        return snap if snap is not None and snap.project.desired_state == "stopped" else None


@dataclass
class Stack(Projects):
    settings: Settings
    store: Store  # the operator's own pool, as in its own process
    proxy: FaultProxy
    url: str
    cli: Cli
    console: httpx.AsyncClient  # the web console: the HTTP API directly
    docker: aiodocker.Docker  # an outside actor, not through the proxy
    api: Recorder
    logs: list[dict[str, Any]]
    operators: list[Operator] = field(default_factory=list)

    @property
    def operator(self) -> Operator:
        return self.operators[0]

    async def containers(self, project: str) -> list[dict[str, Any]]:
        return await project_containers(self.docker, self.settings.installation_id, project)

    def passes(self, project: str) -> list[dict[str, Any]]:
        return [
            line for line in self.logs if line["event"] == "pass" and line["project"] == project
        ]

    # What "done" looks like

    async def running_as_desired(self, name: str) -> DesiredSnapshot | None:
        """Ready, with exactly one container, running, of the targeted deployment and restart
        token, and its endpoint answering."""
        snap = await self.ready(name)
        if snap is None:
            return None
        found = await self.containers(name)
        if len(found) != 1 or not found[0]["State"]["Running"]:
            return None
        labels = found[0]["Config"]["Labels"]
        if not labelled_as_desired(labels, snap) or found[0]["Id"] != snap.status.container_id:
            return None
        return snap if await endpoint_answers(snap) else None

    async def stopped_as_desired(self, name: str) -> DesiredSnapshot | None:
        snap = await self.converged_stopped(name)
        if snap is None:
            return None
        found = await self.containers(name)
        return snap if not any(c["State"]["Running"] for c in found) else None


def labelled_as_desired(labels: dict[str, str], snap: DesiredSnapshot) -> bool:
    """Whether a workload's labels name the project's target deployment and restart token."""
    target = (str(snap.project.target_version), str(snap.project.restart_token))
    return (labels[LABEL_VERSION], labels[LABEL_RESTART]) == target


def proxied(proxy_process: Any) -> dict[str, str]:
    """The settings that route a stack's endpoints through the test's own HAProxy."""
    return {
        "proxy_dir": str(proxy_process.config.directory),
        "proxy_socket": str(proxy_process.config.socket),
    }


def condition(snap: DesiredSnapshot, kind: ConditionType) -> str | None:
    found = snap.status.condition(kind) if snap.status else None
    return found.status if found else None


async def endpoint_answers(snap: DesiredSnapshot) -> bool:
    url = f"http://127.0.0.1:{snap.project.host_port}/healthz"
    async with httpx.AsyncClient() as http:
        try:
            return (await http.get(url, timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False


def stack_settings(
    database_url: str, ports: PortRange, docker_url: str, **settings: Any
) -> Settings:
    """A stack's operator settings: an installation of its own on `ports`, endpoints published
    on loopback, Docker at `docker_url`; `settings` (TETHER_* names, lower-case) over those."""
    return Settings(
        database_url=database_url,
        installation_id=f"test-{uuid.uuid4().hex[:8]}",
        port_range=f"{ports.first}-{ports.last}",
        publish_address="127.0.0.1",
        docker_url=docker_url,
        **settings,
    )


@dataclass
class People:
    """The people on a stack's API at `url`: the `tether` CLI in-process and the web console."""

    url: str
    cli: Cli
    console: httpx.AsyncClient


@contextlib.asynccontextmanager
async def people(
    app: ASGIApp, token: str, capsys: pytest.CaptureFixture[str], config_dir: Path
) -> AsyncIterator[People]:
    """`app` served on uvicorn for as long as the block runs, and the people using it with
    `token` (the CLI keeps its config in `config_dir`)."""
    async with (
        serving(app) as url,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as console,
    ):
        env = {
            "TETHER_CONFIG": str(config_dir / "config.json"),
            "TETHER_URL": url,
            "TETHER_TOKEN": token,
        }
        yield People(url, Cli(capsys, env), console)


@contextlib.asynccontextmanager
async def operating(operator: Operator) -> AsyncIterator[None]:
    """`operator` running for as long as the block runs, then stopped and awaited (a pass in
    flight finishes; what the operator raised is raised), or cancelled if it did not stop."""
    stop = asyncio.Event()
    task = asyncio.create_task(operator.run(stop))
    try:
        try:
            yield
        finally:
            stop.set()
            await task
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_stack(
    *,
    database_url: str,
    api_store: Store,
    token: str,
    ports: PortRange,
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
    config_dir: Path,
    engine_url: str | None = None,
    **settings: Any,
) -> AsyncIterator[Stack]:
    """The API and one operator, which talks to Docker through `proxy`; the outside actor talks
    to the engine directly (the default one unless `engine_url`)."""
    configured = stack_settings(
        database_url, ports, proxy.url, **{"workers": 8, "lease_ttl_s": 3, **settings}
    )
    app = create_app(api_store)
    recorder = Recorder(app)
    docker = aiodocker.Docker(url=engine_url)
    operator_store = await Store.connect(database_url, ports)
    driver = DockerDriver(configured.docker_url, configured.installation_id)
    try:
        with structlog.testing.capture_logs() as logs:
            async with people(recorder, token, capsys, config_dir) as using:
                stack = Stack(
                    configured,
                    operator_store,
                    proxy,
                    using.url,
                    using.cli,
                    using.console,
                    docker,
                    recorder,
                    logs,
                )
                operator = Operator(configured, operator_store, engine_runtime(configured, driver))
                stack.operators.append(operator)
                try:
                    async with operating(operator):
                        yield stack
                finally:
                    watches = getattr(app.state, "watches", None)
                    if watches is not None:
                        watches.shutdown()
    finally:
        await driver.close()
        await operator_store.close()
        try:
            if engine_url is None:  # a private engine is cleaned up with the engine
                await remove_containers(docker, configured.installation_id)
        finally:
            await docker.close()


StackFactory = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]


# The Docker engine restarts


class PrivateEngine:
    """A dockerd of this test's own (its own socket, data, containerd and bridge), so that the
    test may restart the engine without touching the one the rest of the suite shares. Ports
    are published through docker-proxy on 127.0.0.1, as with the main engine."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.bridge = f"tth{uuid.uuid4().hex[:8]}"
        self._process: asyncio.subprocess.Process | None = None

    async def setup(self) -> None:
        taken = await _output("ip", "-4", "addr")
        free = [n for n in range(10, 250) if f"10.213.{n}." not in taken]
        subnet = random.choice(free)
        await _output("ip", "link", "add", self.bridge, "type", "bridge")
        await _output("ip", "addr", "add", f"10.213.{subnet}.1/24", "dev", self.bridge)
        await _output("ip", "link", "set", self.bridge, "up")
        await self.start()
        # No registry: the engine gets the workload image from the main engine.
        await _output("sh", "-c", f"docker save {WORKLOAD} | docker -H {self.url} load")

    async def start(self) -> None:
        with (self.directory / "dockerd.log").open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                "dockerd",
                f"--host={self.url}",
                f"--data-root={self.directory / 'data'}",
                f"--exec-root={self.directory / 'exec'}",
                f"--pidfile={self.directory / 'docker.pid'}",
                f"--bridge={self.bridge}",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        await wait_for(self.answers, "the private dockerd answering", within_s=60)

    async def answers(self) -> bool:
        assert self._process is not None
        if self._process.returncode is not None:
            log = (self.directory / "dockerd.log").read_text()[-2000:]
            raise AssertionError(f"dockerd exited with {self._process.returncode}: {log}")
        docker = aiodocker.Docker(url=self.url)
        try:
            await docker.system.info()
            return True
        except (aiodocker.DockerError, OSError):
            return False
        finally:
            await docker.close()

    async def stop(self) -> None:
        """SIGTERM, as a service manager does: dockerd stops its containers, then exits."""
        if self._process is None or self._process.returncode is not None:
            return
        self._process.terminate()
        async with asyncio.timeout(60):
            await self._process.wait()

    async def teardown(self) -> None:
        """Whatever happened: containers removed (best effort), dockerd stopped (killed if it
        will not stop), its mounts released, the bridge deleted."""
        try:
            if self._process is not None and self._process.returncode is None:
                docker = aiodocker.Docker(url=self.url)
                try:
                    left = await docker.containers.list(all=True)
                    await asyncio.gather(
                        *(c.delete(force=True) for c in left), return_exceptions=True
                    )
                except (aiodocker.DockerError, OSError):
                    pass
                finally:
                    await docker.close()
        finally:
            try:
                await self.stop()
            except TimeoutError:
                assert self._process is not None
                self._process.kill()
                await self._process.wait()
            finally:
                mounts = (await _output("cat", "/proc/mounts")).splitlines()
                ours = [
                    m.split()[1] for m in mounts if m.split()[1].startswith(f"{self.directory}/")
                ]
                for mountpoint in sorted(ours, reverse=True):
                    with contextlib.suppress(AssertionError):
                        await _output("umount", "-l", mountpoint)
                with contextlib.suppress(AssertionError):
                    await _output("ip", "link", "del", self.bridge)


async def _output(*argv: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, f"{' '.join(argv)}: {out.decode(errors='replace')}"
    return out.decode(errors="replace")
