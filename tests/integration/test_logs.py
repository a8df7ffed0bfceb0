"""Following a project: `tether logs` (container output through the API, which reads it from
Docker) and `tether events --follow`, with the real operator and Docker where containers are
involved. Follow commands run as real processes and are ended the way a person ends them: Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiodocker
import httpx
import pytest
import structlog
from cliuser import Cli
from support import Operators, remove_containers, serving, wait_for

from tether.api.app import create_app
from tether.api.models import DeploymentSpec, HttpCheck, Principal
from tether.api.settings import Settings
from tether.api.store import Store
from tether.operator.engine.docker.driver import DockerDriver
from tether.operator.engine.docker.logs import ContainerLogs
from tether.operator.runtimes import engine_runtime
from tether.operator.service import Operator

WORKLOAD = "tether-test/workload:latest"
LOGS_DOC = Path(__file__).resolve().parents[2] / "docs" / "logs.md"

pytestmark = pytest.mark.usefixtures("quiet_servers")


class Process:
    """`tether ...` as a process of its own, its output collected line by line as it comes."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers: list[asyncio.Task[None]] = []

    async def start(self, argv: list[str], env: Mapping[str, str]) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from tether.cli.main import main; main()",
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            asyncio.create_task(self._collect(self.process.stdout, self.out)),
            asyncio.create_task(self._collect(self.process.stderr, self.err)),
        ]

    async def _collect(self, stream: asyncio.StreamReader, into: list[str]) -> None:
        async for line in stream:
            into.append(line.decode().rstrip("\n"))

    async def shows(self, fragment: str, *, on: str = "out", within_s: float = 30.0) -> str:
        lines = self.out if on == "out" else self.err

        async def found() -> str | None:
            return next((line for line in lines if fragment in line), None)

        shown: str = await wait_for(found, f"{fragment!r} on std{on}", within_s)
        return shown

    async def interrupt(self) -> int:
        """Ctrl-C, as a person ends a follow."""
        self.process.send_signal(signal.SIGINT)
        return await self.exit_code()

    async def exit_code(self, within_s: float = 30.0) -> int:
        async with asyncio.timeout(within_s):
            code = await self.process.wait()
            await asyncio.gather(*self._readers)
        return code

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)


@pytest.fixture
async def processes() -> AsyncIterator[
    Callable[[list[str], Mapping[str, str]], Awaitable[Process]]
]:
    started: list[Process] = []

    async def start(argv: list[str], env: Mapping[str, str]) -> Process:
        process = Process()
        await process.start(argv, env)
        started.append(process)
        return process

    yield start
    for process in started:
        await process.close()


Spawn = Callable[[list[str], Mapping[str, str]], Awaitable[Process]]


# Servers: the API with a log source (the real Docker driver) and the real operator


@pytest.fixture
async def driver(settings: Settings) -> AsyncIterator[DockerDriver]:
    docker = DockerDriver(settings.docker_url, settings.installation_id)
    yield docker
    await docker.close()
    outside = aiodocker.Docker()
    try:
        await remove_containers(outside, settings.installation_id)
    finally:
        await outside.close()


@pytest.fixture
async def operator(settings: Settings, store: Store, driver: DockerDriver) -> AsyncIterator[None]:
    operators = Operators()
    operators.start(settings, store, driver)
    yield
    await operators.stop()


@pytest.fixture
async def logs_api(store: Store, driver: DockerDriver) -> AsyncIterator[str]:
    async with serving(create_app(store, log_source=ContainerLogs(driver), keepalive_s=0.5)) as url:
        yield url


def env_for(url: str, token: str, tmp_path: Path) -> dict[str, str]:
    return {
        "TETHER_CONFIG": str(tmp_path / "config.json"),
        "TETHER_URL": url,
        "TETHER_TOKEN": token,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
    }


@pytest.fixture
def alice(capsys: pytest.CaptureFixture[str], logs_api: str, tokens: Any, tmp_path: Path) -> Cli:
    return Cli(capsys, env_for(logs_api, tokens.alice, tmp_path))


@pytest.fixture
async def alice_http(logs_api: str, tokens: Any) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {tokens.alice}"}
    async with httpx.AsyncClient(base_url=logs_api, headers=headers, timeout=10) as http:
        yield http


async def deploy(http: httpx.AsyncClient, name: str, script: str, **env: str) -> None:
    """A deployment of the workload that first runs `script`, then serves its endpoint."""
    if (await http.get(f"/v1/projects/{name}")).status_code == 404:
        assert (await http.post("/v1/projects", json={"name": name})).status_code == 201
    spec = {
        "image": WORKLOAD,
        "command": ["sh", "-c", f"{script}; exec /bin/serve"],
        "env": env,
        "port": 8080,
        "health": {"type": "http", "path": "/healthz"},
        "stop_grace_s": 2,
    }
    answer = await http.post(f"/v1/projects/{name}/deployments", json=spec)
    assert answer.status_code == 201, answer.text


# The route


async def test_without_docker_access_the_logs_route_answers_503(
    client: httpx.AsyncClient, api_url: str, tokens: Any
) -> None:
    assert (await client.post("/v1/projects", json={"name": "shop"})).status_code == 201
    refused = await client.get("/v1/projects/shop/logs")
    assert refused.status_code == 503
    body = refused.json()
    assert body["error"] == "logs_unavailable"
    assert "without Docker access" in body["message"]
    assert "`tether api`" in body["hint"]
    bob = {"Authorization": f"Bearer {tokens.bob}"}
    async with httpx.AsyncClient(base_url=api_url, headers=bob) as http:
        assert (await http.get("/v1/projects/shop/logs")).status_code == 404


async def test_when_docker_cannot_be_reached_logs_says_so(
    store: Store,
    client: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
    tokens: Any,
    tmp_path: Path,
) -> None:
    assert (await client.post("/v1/projects", json={"name": "shop"})).status_code == 201
    nowhere = DockerDriver(f"unix://{tmp_path}/no-docker.sock", "test")
    try:
        async with serving(create_app(store, log_source=ContainerLogs(nowhere))) as url:
            cli = Cli(capsys, env_for(url, tokens.alice, tmp_path))
            failed = await cli("logs", "shop")
            assert failed.code == 1
            assert failed.err.startswith("error: cannot read the output of 'shop' from Docker at ")
            assert "check that dockerd is running" in failed.err
            assert failed.err.count("\n") == 1
    finally:
        await nowhere.close()


@pytest.mark.docker
async def test_logs_show_the_output_of_the_projects_container(
    operator: None, alice: Cli, alice_http: httpx.AsyncClient, logs_api: str, tokens: Any
) -> None:
    # Pauses between the writes: Docker copies stdout and stderr separately, and orders lines of
    # the two streams written within the same instant as it reads them.
    await deploy(alice_http, "shop", "echo out-1; echo err-1 >&2; sleep 0.3; echo out-2; sleep 0.3")
    await alice.ok("watch", "shop", "--timeout", "60")

    shown = await alice.ok("logs", "shop")
    assert shown.out == "out-1\nout-2\n"
    assert "err-1\n" in shown.err
    assert "workload: serving /www on port 8080" in shown.err

    last = await alice.ok("logs", "shop", "--tail", "1")
    assert last.out == ""
    assert last.err.startswith("workload: serving /www on port 8080")
    assert last.err.count("\n") == 1

    lines = (await alice.ok("logs", "shop", "-o", "json")).json_lines()
    assert lines[0]["type"] == "container"
    assert lines[0]["version"] == 1
    assert lines[0]["state"] == "running"
    said = [(line["stream"], line["text"]) for line in lines[1:]]
    assert ("stdout", "out-1") in said
    assert ("stderr", "err-1") in said
    assert said.index(("stdout", "out-1")) < said.index(("stdout", "out-2"))

    assert (await alice.ok("logs", "shop", "--since", "1h")).out == "out-1\nout-2\n"
    later = await alice.ok("logs", "shop", "--since", "2099-01-01T00:00:00Z")
    assert (later.out, later.err) == ("", "")
    bad = await alice("logs", "shop", "--since", "yesterday")
    assert bad.code == 2
    assert "neither a duration" in bad.err

    assert (await alice_http.post("/v1/projects", json={"name": "empty"})).status_code == 201
    empty = await alice.ok("logs", "empty")
    assert empty.err == "empty has no container yet: nothing to show\n"

    bob = {"Authorization": f"Bearer {tokens.bob}"}
    async with httpx.AsyncClient(base_url=logs_api, headers=bob) as http:
        assert (await http.get("/v1/projects/shop/logs")).status_code == 404


@pytest.mark.docker
async def test_logs_follow_the_project_across_a_restart_and_a_new_deployment(
    operator: None,
    alice: Cli,
    alice_http: httpx.AsyncClient,
    processes: Spawn,
) -> None:
    script = 'echo "release $RELEASE on $(hostname)"'
    await deploy(alice_http, "shop", script, RELEASE="1")
    await alice.ok("watch", "shop", "--timeout", "60")
    following = await processes(["logs", "shop", "--follow"], alice.env)
    first = await following.shows("release 1 on ")

    await alice.ok("restart", "shop", "--wait", "--timeout", "60")
    second = await wait_for(
        lambda: _line_other_than(following, "release 1 on ", first), "the restarted container"
    )
    host = second.rsplit(" ", 1)[1]
    await following.shows(f"--- shop: following container {host}", on="err")

    await deploy(alice_http, "shop", script, RELEASE="2")
    await alice.ok("watch", "shop", "--timeout", "60")
    third = await following.shows("release 2 on ")
    assert len({first, second, third}) == 3

    assert await following.interrupt() == 130
    releases = [line for line in following.out if line.startswith("release")]
    assert releases == [first, second, third]  # each container's output once, in order


async def _line_other_than(process: Process, fragment: str, other: str) -> str | None:
    return next((line for line in process.out if fragment in line and line != other), None)


async def test_events_follow_prints_each_new_event_until_the_project_is_gone(
    client: httpx.AsyncClient,
    api_url: str,
    tokens: Any,
    tmp_path: Path,
    store: Store,
    processes: Spawn,
) -> None:
    alice_http, env = client, env_for(api_url, tokens.alice, tmp_path)
    assert (await alice_http.post("/v1/projects", json={"name": "shop"})).status_code == 201
    following = await processes(["events", "shop", "--follow"], env)
    as_json = await processes(["events", "shop", "--follow", "-o", "json"], env)
    await following.shows("desired  Created  (alice)  project created by alice")
    await as_json.shows('"reason": "Created"')

    await alice_http.post("/v1/projects/shop/deployments", json={"image": WORKLOAD})
    await following.shows("desired  Deployed  (alice)  deployed v1")
    await alice_http.post("/v1/projects/shop/stop")
    await following.shows("Stop  (alice)  desired stopped (was running)")
    stop = json.loads(await as_json.shows('"reason": "Stop"'))
    assert stop["kind"] == "desired"
    assert stop["generation"] == 3

    generation = (await alice_http.delete("/v1/projects/shop")).json()["project"]["generation"]
    await following.shows("Destroy  (alice)  deletion requested")
    assert await store.finish_deletion("shop", generation)
    await following.shows("shop was destroyed")
    assert await following.exit_code() == 0
    assert await as_json.exit_code() == 0
    assert json.loads(as_json.out[-1]) == {"type": "deleted", "project": "shop"}
    reasons = [line.split("  ")[4] for line in following.out[:-1]]
    assert reasons == ["Created", "Deployed", "Stop", "Destroy"]


# docs/logs.md and the reconciler's lines agree


def documented_pass_fields() -> set[str]:
    """The fields of the table under "The `pass` line" in docs/logs.md."""
    section = LOGS_DOC.read_text().split("## The `pass` line", 1)[1].split("\n## ", 1)[0]
    return {
        line.split("`")[1]
        for line in section.splitlines()
        if line.startswith("| `") and line.count("|") >= 3
    }


def documented_json_examples() -> list[dict[str, Any]]:
    text = LOGS_DOC.read_text()
    blocks = [part.split("```", 1)[0] for part in text.split("```json\n")[1:]]
    return [json.loads(line) for block in blocks for line in block.splitlines() if line]


def failed(line: Mapping[str, Any]) -> bool:
    return line["result"] == "retrying" or (
        line["result"] == "stalled" and line.get("level", line.get("log_level")) == "warning"
    )


@pytest.mark.docker
async def test_the_log_doc_names_exactly_the_fields_a_pass_logs(
    settings: Settings, store: Store, driver: DockerDriver
) -> None:
    fields = documented_pass_fields()
    assert "error" in fields
    assert len(fields) == 12
    examples = documented_json_examples()
    assert len(examples) >= 5
    for example in examples:
        expected = fields if failed(example) else fields - {"error"}
        assert example.keys() - {"event", "level", "timestamp"} == expected, example
        assert example["event"] == "pass"

    operator = Operator(settings, store, engine_runtime(settings, driver))
    operator.lease.assume_held()  # passes run by hand: no lease task in this test
    alice = Principal(owner="alice")
    healthy = DeploymentSpec(
        image=WORKLOAD, port=8080, health=HttpCheck(type="http", path="/healthz"), stop_grace_s=1
    )
    for name, spec in (("shop", healthy), ("nope", DeploymentSpec(image="tether-test/no:1"))):
        await store.create_project(name, alice)
        await store.deploy(name, spec, alice)
    with structlog.testing.capture_logs() as logs:
        for name in ("shop", "nope", "shop", "nope"):
            await operator.reconciler.reconcile(name)
    passes = [line for line in logs if line["event"] == "pass"]
    assert len(passes) == 4
    assert [failed(line) for line in passes] == [False, True, False, True]
    for line in passes:
        expected = fields if failed(line) else fields - {"error"}
        assert line.keys() - {"event", "log_level"} == expected, line
