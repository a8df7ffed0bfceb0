"""`tether logs` through an API without Docker access (compose's API container): `tether operator`
serves container output on its log channel (a unix socket, a shared secret), `tether api` reads it
there. Both run as processes; the API's Docker URL leads nowhere."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import httpx
import pytest
from servers import installation_env, proxy_ready, server_process, short_dir
from support import free_port, free_ports, remove_containers, wait_for

from tether.api.store import PortRange, Store
from tether.cli.main import run

WORKLOAD = "tether-test/workload:latest"
SECRET = "logs-" + uuid.uuid4().hex + uuid.uuid4().hex


@pytest.fixture
async def run_dir() -> AsyncIterator[Path]:
    async with short_dir() as directory:
        yield directory


@pytest.mark.docker
async def test_logs_work_through_an_api_without_docker_access(
    database_url: str,
    store: Store,
    port_range: PortRange,
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api_port, operator_port = free_ports(2)
    api = f"http://127.0.0.1:{api_port}"
    channel = str(run_dir / "logs.sock")
    common = {
        **installation_env(database_url, port_range, run_dir),
        "TETHER_LOGS_SOCKET": channel,
        "TETHER_LOGS_SECRET": SECRET,
        "TETHER_LOG_FORMAT": "json",
    }
    # No Docker for the API: nothing answers there.
    api_env = {
        **common,
        "TETHER_API_PORT": str(api_port),
        "TETHER_DOCKER_URL": "unix:///nonexistent/docker.sock",
    }
    token = await store.create_token("alice")
    user = {"TETHER_URL": api, "TETHER_TOKEN": token, "TETHER_CONFIG": "/nonexistent"}

    async def tether(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(run, list(argv), user)
        out, err = capsys.readouterr()
        return code, out, err

    # The containers are removed once the operator has stopped: while it runs, it would
    # start the project again.
    try:
        async with (
            server_process(
                "proxy", common, tmp_path / "proxy.log", None, ready=proxy_ready(common)
            ),
            server_process(
                "operator",
                {**common, "TETHER_OPERATOR_PORT": str(operator_port)},
                tmp_path / "operator.log",
                f"http://127.0.0.1:{operator_port}",
            ) as operator,
            server_process("api", api_env, tmp_path / "api.log", api) as server,
            httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {token}"}) as http,
        ):
            assert (await http.post("/v1/projects", json={"name": "shop"})).status_code == 201
            spec = {
                "image": WORKLOAD,
                "command": [
                    "sh",
                    "-c",
                    "echo out-1; echo err-1 >&2; sleep 0.3; echo out-2; exec /bin/serve",
                ],
                "port": 8080,
                "health": {"type": "http", "path": "/healthz"},
                "stop_grace_s": 2,
            }
            deployed = await http.post("/v1/projects/shop/deployments", json=spec)
            assert deployed.status_code == 201, deployed.text
            code, _, err = await tether("watch", "shop", "--timeout", "60")
            assert code == 0, err

            code, out, err = await tether("logs", "shop")
            assert code == 0, err
            assert out == "out-1\nout-2\n"
            assert "err-1\n" in err
            # Docker copies a container's output to its log on its own time: the workload's
            # last line (on stderr, once it serves) may reach the log after Ready was recorded.

            async def served_line_logged() -> bool:
                return "workload: serving" in (await tether("logs", "shop"))[2]

            await wait_for(served_line_logged, "the workload's serving line in its log")
            # Docker copies stdout and stderr each on its own: "out-2" and the serving line,
            # written a moment apart, may reach the log in either order, but both after err-1
            # (0.3 s before them).
            code, out, err = await tether("logs", "shop", "--tail", "2")
            assert (code, out) == (0, "out-2\n")
            assert err.startswith("workload: serving /www on port 8080")
            assert "err-1" not in err

            # The channel serves nobody without the secret, nor with another.
            transport = httpx.AsyncHTTPTransport(uds=channel)
            async with httpx.AsyncClient(transport=transport, base_url="http://operator") as raw:
                assert (await raw.get("/logs/shop")).status_code == 401
                wrong = {"Authorization": f"Bearer {SECRET}x"}
                assert (await raw.get("/logs/shop", headers=wrong)).status_code == 401
                right = {"Authorization": f"Bearer {SECRET}"}
                assert (await raw.get("/logs/shop", headers=right)).status_code == 200

            # An API whose secret differs from the operator's says what to fix.
            other_port = free_port()
            other = {
                **api_env,
                "TETHER_API_PORT": str(other_port),
                "TETHER_LOGS_SECRET": SECRET + "x",
            }
            async with server_process(
                "api", other, tmp_path / "other.log", f"http://127.0.0.1:{other_port}"
            ):
                user["TETHER_URL"] = f"http://127.0.0.1:{other_port}"
                code, out, err = await tether("logs", "shop")
                user["TETHER_URL"] = api
            assert code == 1
            assert "the operator's log channel answered 401" in err
            assert "TETHER_LOGS_SECRET differs between the API and the operator" in err
    finally:
        async with aiodocker.Docker() as docker:
            await remove_containers(docker, common["TETHER_INSTALLATION_ID"])
    for process in (operator, server):
        assert SECRET not in process.output()
