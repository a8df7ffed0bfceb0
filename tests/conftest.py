"""Fixtures shared by every folder (unit/, integration/, scenarios/): a real Postgres
(testcontainers), one migrated template database per session cloned per test, a connected store,
operator settings, a real HTTP API server on loopback, and tokens.

Environment:
- TETHER_POSTGRES_IMAGE: the Postgres image testcontainers starts (default postgres:15).
- TETHER_TEST_DATABASE_URL: use this server instead of starting a container (its user must be
  allowed to create databases).

tests/ is on `pythonpath` (pytest's configuration in pyproject.toml): the fault-injecting Docker
proxy (tests/faultproxy.py) is importable as `faultproxy` from every test module, and
`docker_proxy` gives each test one of its own; the helpers in tests/support.py are importable as
`support`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiodocker
import asyncpg
import httpx
import pytest
import structlog

# testcontainers believes it runs inside a container on these machines (there is a /.dockerenv)
# and would then reach containers through the bridge gateway; only loopback is allowed here.
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
os.environ.setdefault("TC_HOST", "127.0.0.1")
# Ryuk's image cannot be pulled without a registry; fixtures stop their containers themselves.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from faultproxy import FaultProxy, unix_socket_of
from support import serving

from tether.api.app import create_app
from tether.api.migrator import migrate
from tether.api.models import Principal
from tether.api.settings import Settings
from tether.api.store import PortRange, Store
from tether.operator.haproxy.admin import HAProxy
from tether.operator.haproxy.config import ProxyConfig
from tether.operator.haproxy.process import HAProxyProcess

TEMPLATE = "tether_template"


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    given = os.environ.get("TETHER_TEST_DATABASE_URL")
    if given:
        yield given
        return
    from testcontainers.community.postgres import PostgresContainer

    image = os.environ.get("TETHER_POSTGRES_IMAGE", "postgres:15")
    with PostgresContainer(image, driver=None) as container:
        yield container.get_connection_url()


@pytest.fixture(scope="session")
async def template_url(postgres_url: str) -> str:
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await admin.close()
    url = with_database(postgres_url, TEMPLATE)
    await migrate(url)
    return url


@pytest.fixture
async def database_url(postgres_url: str, template_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test, cloned from the session's template."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        yield with_database(postgres_url, name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def new_database(postgres_url: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Creates empty databases on demand, dropped when the test ends."""
    admin = await asyncpg.connect(postgres_url)
    created: list[str] = []

    async def create() -> str:
        name = f"e_{uuid.uuid4().hex[:12]}"
        await admin.execute(f"CREATE DATABASE {name}")
        created.append(name)
        return with_database(postgres_url, name)

    try:
        yield create
        for name in created:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


def _all_free(first: int, last: int) -> bool:
    for port in range(first, last + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


@pytest.fixture
def port_range() -> PortRange:
    """Host ports for this test's projects: a block of 100 that nothing on this host holds,
    below the ephemeral range (32768 up), where Docker publishes containers' ports for the
    proxy and the kernel picks client ports: the test's proxy binds the whole block."""
    for _ in range(50):
        first = 20000 + (uuid.uuid4().int % 120) * 100
        if _all_free(first, first + 99):
            return PortRange(first, first + 99)
    raise RuntimeError("no free block of 100 host ports between 20000 and 31999")


@pytest.fixture
async def store(database_url: str, port_range: PortRange) -> AsyncIterator[Store]:
    connected = await Store.connect(database_url, port_range)
    yield connected
    await connected.close()


@dataclass(frozen=True)
class Tokens:
    alice: str
    bob: str
    admin: str


@pytest.fixture
async def tokens(store: Store) -> Tokens:
    return Tokens(
        alice=await store.create_token("alice"),
        bob=await store.create_token("bob"),
        admin=await store.create_token("root", admin=True),
    )


@pytest.fixture
def settings(request: pytest.FixtureRequest, database_url: str, port_range: PortRange) -> Settings:
    """An installation of this test's own, for in-process operators; a test that needs Docker
    (marked `docker`) also gets a proxy of its own for its projects' endpoints."""
    proxy: dict[str, str] = {}
    if request.node.get_closest_marker("docker") is not None:
        running: RunningProxy = request.getfixturevalue("proxy_process")
        proxy = {
            "proxy_dir": str(running.config.directory),
            "proxy_socket": str(running.config.socket),
        }
    return Settings(
        database_url=database_url,
        installation_id=f"test-{uuid.uuid4().hex[:8]}",
        port_range=f"{port_range.first}-{port_range.last}",
        publish_address="127.0.0.1",
        workers=4,
        **proxy,
    )


ALICE = Principal(owner="alice")
BOB = Principal(owner="bob")
ADMIN = Principal(owner="root", admin=True)


@pytest.fixture
async def api_url(store: Store) -> AsyncIterator[str]:
    """A real uvicorn server for the API on a loopback port, for this test's database."""
    async with serving(create_app(store, max_body_bytes=64 * 1024)) as url:
        yield url


@pytest.fixture
async def client(api_url: str, tokens: Tokens) -> AsyncIterator[httpx.AsyncClient]:
    """Alice's HTTP client."""
    async with httpx.AsyncClient(
        base_url=api_url, headers={"Authorization": f"Bearer {tokens.alice}"}, timeout=10
    ) as http:
        yield http


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running behind it."""
    before = asyncio.all_tasks()
    yield
    leaked = [t for t in asyncio.all_tasks() - before - {asyncio.current_task()} if not t.done()]
    assert not leaked, f"tasks left running: {leaked}"


@pytest.fixture
def quiet_servers() -> Iterator[None]:
    """Servers' log lines kept out of the captured output, where a test reads the CLI's (the
    in-process `cliuser.Cli`): `pytestmark = pytest.mark.usefixtures("quiet_servers")`."""
    with structlog.testing.capture_logs():
        yield


@pytest.fixture
async def direct() -> AsyncIterator[aiodocker.Docker]:
    """The engine itself, as an outside actor sees it (not through any proxy): the truth."""
    docker = aiodocker.Docker()
    yield docker
    await docker.close()


@pytest.fixture
async def docker_proxy() -> AsyncIterator[FaultProxy]:
    """A fault-injecting proxy in front of the real Docker engine, on a unix socket of its own;
    point a Docker URL at `docker_proxy.url`."""
    upstream = unix_socket_of(os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
    # A short path: unix socket paths are limited to about 100 bytes, pytest's tmp_path is long.
    directory = tempfile.mkdtemp(prefix="tether-proxy-", dir="/tmp")
    proxy = FaultProxy(os.path.join(directory, "docker.sock"), upstream)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class RunningProxy:
    """A supervised HAProxy of one test's own, and a client of its admin socket."""

    process: HAProxyProcess
    client: HAProxy

    @property
    def config(self) -> ProxyConfig:
        return self.process.config


@pytest.fixture
def proxy_hold_s() -> float:
    """How long the test's proxy holds requests to a held route: short, for the proxy's own
    tests of what comes after the hold (tests/scenarios keep the default 10 s)."""
    return 2.0


@pytest.fixture
async def proxy_process(port_range: PortRange, proxy_hold_s: float) -> AsyncIterator[RunningProxy]:
    """HAProxy, started by its supervisor, binding this test's port block on 127.0.0.1 (hold
    time 2 s), in a directory of its own; stopped and removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="tether-haproxy-", dir="/tmp"))
    config = ProxyConfig(
        directory=directory,
        socket=directory / "admin.sock",
        address="127.0.0.1",
        first_port=port_range.first,
        last_port=port_range.last,
        hold_s=proxy_hold_s,
    )
    process = HAProxyProcess(config)
    client = HAProxy(config, timeout_s=2.0)
    try:
        await process.start()
        yield RunningProxy(process, client)
    finally:
        await client.close()
        await process.stop(grace_s=2.0)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def haproxy(proxy_process: RunningProxy) -> HAProxy:
    """A connected `HAProxy` client of this test's own HAProxy (`proxy_process`)."""
    return proxy_process.client
