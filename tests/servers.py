"""tether's servers as processes (`tether api`, `tether operator`, ...), as an operator runs them:
each with its environment and a log file of its own, ready once its `/readyz` answers 200, and
stopped with SIGTERM, which must end it with exit code 0."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from support import wait_for

from tether.api.store import PortRange

TETHER = str(Path(sys.executable).parent / "tether")


@dataclass(frozen=True)
class ServerProcess:
    process: asyncio.subprocess.Process
    log: Path
    url: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@asynccontextmanager
async def server_process(
    command: str,
    env: Mapping[str, str],
    log: Path,
    ready_url: str | None,
    *args: str,
    within_s: float = 30,
    ready: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[ServerProcess]:
    """`tether COMMAND ARGS` with `env` added to this process's environment, its stdout and
    stderr both in `log`, once it answers 200 at `ready_url`/readyz (or once `ready()` is true,
    for a server without that endpoint)."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            TETHER, command, *args, env={**os.environ, **env}, stdout=out, stderr=out
        )
    running = ServerProcess(process, log, ready_url or "")
    try:
        async with httpx.AsyncClient(timeout=2) as http:

            async def answers() -> bool:
                assert process.returncode is None, f"tether {command} ended:\n{running.output()}"
                if ready is not None:
                    return await ready()
                try:
                    return (await http.get(f"{ready_url}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(answers, f"tether {command} ready", within_s=within_s, every_s=0.1)
        yield running
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await process.wait()
    assert code == 0, f"tether {command} exited {code}:\n{running.output()}"


def installation_env(database_url: str, port_range: PortRange, run_dir: Path) -> dict[str, str]:
    """The settings of a tether installation of a test's own: its database, an installation id,
    its port range, and the proxy's files under `run_dir` (short: a unix socket goes there)."""
    return {
        "TETHER_DATABASE_URL": database_url,
        "TETHER_INSTALLATION_ID": f"test-{uuid.uuid4().hex[:8]}",
        "TETHER_PORT_RANGE": f"{port_range.first}-{port_range.last}",
        "TETHER_PROXY_DIR": str(run_dir / "proxy"),
        "TETHER_PROXY_SOCKET": str(run_dir / "proxy" / "admin.sock"),
    }


@asynccontextmanager
async def short_dir() -> AsyncIterator[Path]:
    """A directory with a short path (unix socket paths must fit in 107 bytes), removed after."""
    directory = Path(tempfile.mkdtemp(prefix="tether-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def proxy_ready(env: Mapping[str, str]) -> Callable[[], Awaitable[bool]]:
    """`tether proxy` is ready once its admin socket exists."""

    async def ready() -> bool:
        return await asyncio.to_thread(os.path.exists, env["TETHER_PROXY_SOCKET"])

    return ready
