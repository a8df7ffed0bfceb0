"""`tether up` as a person runs it: on a fresh database it migrates, creates an admin token and logs
this machine's CLI in; a deploy through that login converges and its endpoint answers through the
proxy `up` runs; Ctrl-C (SIGINT) ends it with exit code 0; and a second `up` on the same database
finds the login still valid and routes the endpoint to the same container again.

The database is the test's own (TETHER_DATABASE_URL), so `up` manages no Postgres container here:
the managed container has a fixed name, port and volume, which a developer's own `tether up`
may be using."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiodocker
import httpx
import pytest
from cliuser import Cli
from servers import ServerProcess, installation_env, server_process, short_dir
from support import free_port, remove_containers, wait_for

from tether.api.store import PortRange

pytestmark = pytest.mark.docker

WORKLOAD = "tether-test/workload:latest"


@pytest.fixture
async def run_dir() -> AsyncIterator[Path]:
    async with short_dir() as directory:
        yield directory


async def interrupt(up: ServerProcess) -> None:
    """Ctrl-C: SIGINT, and `up` must stop everything it started and exit 0 on its own."""
    up.process.send_signal(signal.SIGINT)
    code = await up.process.wait()
    assert code == 0, f"tether up exited {code}:\n{up.output()}"
    assert "tether stopped" in up.output()


def answers(endpoint: str) -> Callable[[], Awaitable[bool]]:
    """The endpoint's workload answers its health path, through the proxy."""

    async def ok() -> bool:
        async with httpx.AsyncClient(timeout=2) as http:
            try:
                return (await http.get(f"http://{endpoint}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

    return ok


async def test_up_logs_in_serves_a_deploy_and_comes_back_after_ctrl_c(
    new_database: Callable[[], Awaitable[str]],
    port_range: PortRange,
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    config = tmp_path / "config.json"
    env = {
        **installation_env(await new_database(), port_range, run_dir),
        "TETHER_API_PORT": str(api_port),
        "TETHER_CONFIG": str(config),
    }
    user = Cli(capsys, {"TETHER_CONFIG": str(config)})  # no token of its own: `up`'s login
    try:
        async with server_process("up", env, tmp_path / "up-1.log", api) as first:
            saved = json.loads(config.read_text())
            assert saved["url"] == api
            assert saved["token"] in first.output()  # shown once, to the person who ran `up`
            assert "created an admin token and logged the CLI in" in first.output()

            await user.ok(
                "deploy", "shop", "--image", WORKLOAD, "--port", "8080", "--health-path",
                "/healthz", "--wait", "--timeout", "60",
            )  # fmt: skip
            shown = (await user.ok("status", "shop", "-o", "json")).json()["status"]
            endpoint, container = shown["endpoint"], shown["container_id"]
            await wait_for(answers(endpoint), f"shop on {endpoint}", within_s=10)
            await interrupt(first)

        async with server_process("up", env, tmp_path / "up-2.log", api) as second:
            assert "the CLI is logged in" in second.output()
            assert "created an admin token" not in second.output()
            await wait_for(answers(endpoint), f"shop on {endpoint} again", within_s=30)
            again = (await user.ok("status", "shop", "-o", "json")).json()["status"]
            assert (again["endpoint"], again["container_id"]) == (endpoint, container)
            await interrupt(second)
    finally:
        async with aiodocker.Docker() as docker:
            await remove_containers(docker, env["TETHER_INSTALLATION_ID"])
