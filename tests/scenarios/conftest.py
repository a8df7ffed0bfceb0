"""Fixtures of the scenarios: the whole stack for alice (`stack`, or `make_stack(**settings)`), a
Postgres of the test's own that it may stop (`own_postgres`), and a dockerd of its own that it
may restart (`private_engine`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy
from scenarios.harness import PrivateEngine, Stack, StackFactory, proxied, running_stack
from support import free_port

from tether.api.migrator import migrate
from tether.api.store import PortRange, Store


@pytest.fixture
def proxy_hold_s() -> float:
    """The default hold time (TETHER_PROXY_HOLD_S): what a stop-first replacement's gap has."""
    return 10.0


@pytest.fixture
def make_stack(
    database_url: str,
    store: Store,
    tokens: Any,
    port_range: PortRange,
    docker_proxy: FaultProxy,
    proxy_process: Any,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> StackFactory:
    """`async with make_stack(**operator_settings) as stack`: the whole stack for alice, its
    endpoints behind an HAProxy of the test's own."""

    def make(**settings: Any) -> contextlib.AbstractAsyncContextManager[Stack]:
        settings = {**proxied(proxy_process), **settings}
        return running_stack(
            database_url=database_url,
            api_store=store,
            token=tokens.alice,
            ports=port_range,
            proxy=docker_proxy,
            capsys=capsys,
            config_dir=tmp_path,
            **settings,
        )

    return make


@pytest.fixture
async def stack(make_stack: StackFactory) -> AsyncIterator[Stack]:
    async with make_stack() as running:
        yield running


@pytest.fixture
async def own_postgres() -> AsyncIterator[tuple[str, str]]:
    """A Postgres of this test's own, that it may stop and start: (DSN, container id). Its host
    port is fixed, so that it stays the same across the restart."""
    from testcontainers.community.postgres import PostgresContainer

    image = os.environ.get("TETHER_POSTGRES_IMAGE", "postgres:15")
    container = PostgresContainer(image, driver=None).with_bind_ports(5432, free_port())
    await asyncio.to_thread(container.start)
    try:
        dsn = container.get_connection_url()
        await migrate(dsn)
        yield dsn, container.get_wrapped_container().id
    finally:
        await asyncio.to_thread(container.stop)


@pytest.fixture
async def private_engine() -> AsyncIterator[PrivateEngine]:
    # A short path: containerd's sockets live under it, and unix socket paths are short.
    directory = Path(tempfile.mkdtemp(prefix="tdk-", dir="/tmp"))
    engine = PrivateEngine(directory)
    try:
        await engine.setup()
        yield engine
    finally:
        await engine.teardown()
        shutil.rmtree(directory, ignore_errors=True)
