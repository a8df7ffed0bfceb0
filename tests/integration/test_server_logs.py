"""One structured log: every line `tether proxy`, `tether operator` and `tether api` write during a
whole run (started as processes, as compose runs them, with `--log-format json`) is a JSON object,
uvicorn's start-up lines and the request lines included; and no line anywhere contains a token,
a project's secret env value, the database password or a secret sent in a query string."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiodocker
import httpx
import pytest
from servers import installation_env, proxy_ready, server_process, short_dir
from support import free_ports, remove_containers, wait_for

from tether.api.store import PortRange, Store
from tether.cli.main import run

WORKLOAD = "tether-test/workload:latest"
SECRET = "s3cr3t-" + uuid.uuid4().hex  # unique: found nowhere by chance
QUERY_SECRET = "q-" + uuid.uuid4().hex


@pytest.fixture
async def run_dir() -> AsyncIterator[Path]:
    async with short_dir() as directory:
        yield directory


async def cli(env: dict[str, str], *argv: str) -> int:
    return await asyncio.to_thread(run, list(argv), env)


def lines_of(text: str) -> list[dict[str, Any]]:
    parsed = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"a log line that is not JSON: {line!r}") from None
        assert isinstance(record, dict), line
        parsed.append(record)
    return parsed


@pytest.mark.docker
async def test_every_server_line_is_json_and_none_shows_a_secret(
    database_url: str,
    store: Store,
    port_range: PortRange,
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api_port, operator_port = free_ports(2)
    api = f"http://127.0.0.1:{api_port}"
    env = {
        **installation_env(database_url, port_range, run_dir),
        "TETHER_API_PORT": str(api_port),
        "TETHER_OPERATOR_PORT": str(operator_port),
        "TETHER_LOG_LEVEL": "debug",  # every line there is
    }
    alice = await store.issue_token("alice")
    admin = await store.create_token("root", admin=True)
    user = {"TETHER_URL": api, "TETHER_TOKEN": alice.token, "TETHER_CONFIG": "/nonexistent"}

    json_format = ("--log-format", "json")
    async with (
        server_process(
            "proxy", env, tmp_path / "proxy.log", None, *json_format, ready=proxy_ready(env)
        ) as proxy,
        server_process(
            "operator",
            env,
            tmp_path / "operator.log",
            f"http://127.0.0.1:{operator_port}",
            *json_format,
        ) as operator,
        server_process("api", env, tmp_path / "api.log", api, *json_format) as server,
    ):
        try:
            assert await cli(user, "projects", "create", "shop") == 0
            deployed = await cli(
                user,
                "deploy",
                "shop",
                "--image",
                WORKLOAD,
                "--port",
                "8080",
                "--health-path",
                "/healthz",
                "--secret-env",
                f"API_KEY={SECRET}",
                "--wait",
                "--timeout",
                "60",
            )
            assert deployed == 0, capsys.readouterr()
            assert await cli(user, "logs", "shop") == 0
            assert await cli(user, "restart", "shop", "--wait", "--timeout", "60") == 0
            async with httpx.AsyncClient(base_url=api, timeout=10) as http:
                # A secret in a query string, and a token sent where it is not read from.
                bearer = {"Authorization": f"Bearer {alice.token}"}
                await http.get(f"/v1/projects/shop/events?api_key={QUERY_SECRET}", headers=bearer)
                await http.get(f"/v1/projects?token={admin}")
                await http.get("/v1/projects", headers={"Authorization": f"Bearer {admin}x"})
                wrong = await http.post("/v1/projects", headers=bearer, json={"name": "Bad!"})
                assert wrong.status_code == 422
            assert await cli(user, "stop", "shop", "--wait", "--timeout", "60") == 0
            assert await cli(user, "destroy", "shop") == 0

            async def gone() -> bool:
                return not await store.list_projects(alice_principal(alice.id))

            await wait_for(gone, "the project destroyed", within_s=60)
        finally:
            async with aiodocker.Docker() as docker:
                await remove_containers(docker, env["TETHER_INSTALLATION_ID"])
    capsys.readouterr()  # the CLI's own output is not the servers'

    password = urlsplit(database_url).password
    secrets = {
        "token": alice.token,
        "admin token": admin,
        "secret env value": SECRET,
        "query secret": QUERY_SECRET,
        "token body": alice.token[4:],
    }
    if password:
        secrets["database password"] = f":{password}@"
    logs = {"proxy": proxy.output(), "operator": operator.output(), "api": server.output()}
    for name, text in logs.items():
        for what, secret in secrets.items():
            assert secret not in text, f"{name}'s log shows the {what}"
        assert lines_of(text), f"{name} logged nothing"

    api_lines = lines_of(logs["api"])
    started = [r for r in api_lines if r.get("logger") == "uvicorn.error"]
    assert any(r["event"].startswith("Started server process") for r in started), started
    assert all({"level", "timestamp"} <= set(r) for r in api_lines)
    requests = [r for r in api_lines if r["event"] == "request"]
    assert requests
    for record in requests:
        assert set(record) >= {"method", "route", "status", "duration_ms", "client", "token_id"}
        assert "?" not in record["route"]
    routes = {(r["method"], r["route"], r["status"], r["token_id"]) for r in requests}
    assert ("POST", "/v1/projects", 201, alice.id) in routes
    assert ("GET", "/v1/projects/{name}/events", 200, alice.id) in routes
    assert ("GET", "/v1/projects", 401, None) in routes
    assert ("POST", "/v1/projects", 422, alice.id) in routes
    assert any(r["route"] == "/v1/projects/{name}/logs" for r in requests)
    assert any(r["route"] == "/v1/projects/{name}/watch" for r in requests)
    operator_lines = lines_of(logs["operator"])
    assert any(r["event"] == "pass" and r["project"] == "shop" for r in operator_lines)
    assert any(r.get("logger") == "uvicorn.error" for r in operator_lines)


def alice_principal(token_id: int) -> Any:
    from tether.api.models import Principal

    return Principal(owner="alice", token_id=token_id)
