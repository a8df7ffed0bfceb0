"""Watching convergence: the API's server-sent event streams over real HTTP, `tether watch` and
every write's `--wait` with their exit codes (0 as desired, 1 stalled or rollout failed, 2 timeout),
and `tether watch` on a real pseudo-terminal as a person sees it.

Tests without Docker simulate the operator by writing its status through the store (what the
operator does after each pass); the others run the real operator against a real Docker engine.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import struct
import sys
import termios
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiodocker
import asyncpg
import httpx
import pyte
import pytest
from cliuser import Cli
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from support import Operators, remove_containers, serving, wait_for

from tether.api.app import create_app
from tether.api.models import (
    Condition,
    ConditionType,
    Principal,
    Status,
)
from tether.api.settings import Settings
from tether.api.store import PortRange, Store
from tether.api.watch import LISTENER_NAME

WORKLOAD = "tether-test/workload:latest"
ALICE = Principal(owner="alice")
HEALTHY_ARGS = ("--image", WORKLOAD, "--port", "8080", "--health-path", "/healthz")
WATCHERS = "tether_api_watchers"
KEEPALIVE_S = 0.3
SINCE = datetime(
    2024, 5, 1, tzinfo=UTC
)  # the conditions' transition time, as the operator keeps it

pytestmark = pytest.mark.usefixtures("quiet_servers")


# Helpers: a CLI user, an API server of this file's own


@dataclass(frozen=True)
class Api:
    app: FastAPI
    url: str


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Api]:
    """The API with a short keep-alive, so that tests can see it."""
    app = create_app(store, keepalive_s=KEEPALIVE_S)
    async with serving(app) as url:
        yield Api(app, url)


def http_for(url: str, token: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=10)


@pytest.fixture
async def alice_http(api: Api, tokens: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with http_for(api.url, tokens.alice) as http:
        yield http


@pytest.fixture
def alice(capsys: pytest.CaptureFixture[str], api: Api, tokens: Any, tmp_path: Path) -> Cli:
    return Cli(
        capsys,
        {
            "TETHER_CONFIG": str(tmp_path / "config.json"),
            "TETHER_URL": api.url,
            "TETHER_TOKEN": tokens.alice,
        },
    )


class Stream:
    """One open server-sent event stream, read message by message."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, within_s: float = 10.0, *, comments: bool = False) -> tuple[str, Any]:
        """The next message as (event, data); with `comments`, a comment as (":", text)."""
        event, data = "message", []
        async with asyncio.timeout(within_s):
            async for line in self._lines:
                if line.startswith(":"):
                    if comments:
                        return ":", line[1:].strip()
                elif not line:
                    if data:
                        return event, json.loads("\n".join(data))
                else:
                    field, _, value = line.partition(":")
                    if field == "event":
                        event = value.strip()
                    elif field == "data":
                        data.append(value.removeprefix(" "))
        raise EOFError("the stream ended")

    async def until(self, check: Callable[[str, Any], bool], within_s: float = 10.0) -> Any:
        """Skip messages until one passes `check`; return its data."""
        deadline = time.monotonic() + within_s
        while True:
            event, data = await self.next(max(deadline - time.monotonic(), 0.01))
            if check(event, data):
                return data


@asynccontextmanager
async def watching(http: httpx.AsyncClient, path: str) -> AsyncIterator[Stream]:
    async with http.stream("GET", path) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


async def create(http: httpx.AsyncClient, name: str, *, deploy: bool = True) -> dict[str, Any]:
    assert (await http.post("/v1/projects", json={"name": name})).status_code == 201
    if not deploy:
        return {}
    answer = await http.post(f"/v1/projects/{name}/deployments", json={"image": WORKLOAD})
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def operator_says(
    store: Store,
    name: str,
    *,
    phase: str = "Running",
    ready: bool = True,
    reconciling: bool = False,
    stalled: bool = False,
    reason: str = "Ready",
    message: str = "v1 is ready",
    observed: int | None = None,
    conditions_of: int | None = None,
    failed_version: int | None = None,
    running_version: int | None = 1,
) -> None:
    """Write a status as the operator does after a pass (by default: converged and Ready, for
    the current generation)."""
    snapshot = await store.desired(name)
    assert snapshot is not None
    generation = snapshot.project.generation if observed is None else observed

    def condition(kind: ConditionType, value: bool) -> Condition:
        return Condition(
            type=kind,
            status="True" if value else "False",
            reason=reason,
            message=message,
            last_transition_time=SINCE,
            observed_generation=generation if conditions_of is None else conditions_of,
        )

    status = Status(
        project=name,
        observed_generation=generation,
        phase=phase,
        conditions=[
            condition(ConditionType.READY, ready),
            condition(ConditionType.RECONCILING, reconciling),
            condition(ConditionType.STALLED, stalled),
        ],
        running_version=running_version,
        endpoint="127.0.0.1:20000",
        failed_version=failed_version,
    )
    await store.write_status(status, [], actor="operator")


async def listeners(database_url: str) -> int:
    """The API's LISTEN connections to this test's database."""
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            LISTENER_NAME,
        )
        return count
    finally:
        await conn.close()


# The streams, over real HTTP


async def test_a_watch_sends_the_view_at_once_and_again_on_each_change(
    alice_http: httpx.AsyncClient, store: Store
) -> None:
    await create(alice_http, "shop")
    async with watching(alice_http, "/v1/projects/shop/watch") as stream:
        event, view = await stream.next()
        assert event == "view"
        assert view["project"]["name"] == "shop"
        assert view["project"]["desired_state"] == "running"
        assert view["project"]["generation"] == 2
        assert view["status"] is None
        assert [e["reason"] for e in view["events"]] == ["Created", "Deployed"]

        # A desired-state change (NOTIFY tether_desired).
        assert (await alice_http.post("/v1/projects/shop/stop")).status_code == 200
        event, view = await stream.next()
        assert event == "view"
        assert view["project"]["desired_state"] == "stopped"
        assert view["project"]["generation"] == 3
        assert view["events"][-1]["reason"] == "Stop"

        # A status write (NOTIFY tether_status).
        await operator_says(store, "shop", phase="Stopped", ready=False, message="stopped")
        event, view = await stream.next()
        assert event == "view"
        assert view["status"]["phase"] == "Stopped"
        assert view["status"]["observed_generation"] == 3

        # The same status written again changes nothing: only keep-alives follow.
        await operator_says(store, "shop", phase="Stopped", ready=False, message="stopped")
        assert await stream.next(comments=True) == (":", "keep-alive")
        assert await stream.next(comments=True) == (":", "keep-alive")


async def test_watch_needs_a_token_and_hides_other_owners_projects(
    api: Api, alice_http: httpx.AsyncClient, tokens: Any
) -> None:
    await create(alice_http, "shop")
    async with http_for(api.url, None) as anonymous:
        refused = await anonymous.get("/v1/projects/shop/watch")
        assert refused.status_code == 401
        assert refused.json()["error"] == "unauthorized"
        assert (await anonymous.get("/v1/watch")).status_code == 401
    async with http_for(api.url, tokens.bob) as bob:
        hidden = await bob.get("/v1/projects/shop/watch")
        assert hidden.status_code == 404
        assert hidden.json()["message"] == "no project named 'shop'"
        async with watching(bob, "/v1/watch") as stream:
            assert await stream.next() == ("synced", {"projects": 0})
            # Alice's changes never reach Bob's stream.
            assert (await alice_http.post("/v1/projects/shop/stop")).status_code == 200
            assert await stream.next(comments=True) == (":", "keep-alive")
    async with http_for(api.url, tokens.admin) as admin, watching(admin, "/v1/watch") as stream:
        event, view = await stream.next()
        assert (event, view["project"]["owner"]) == ("view", "alice")


async def test_watching_everything(
    api: Api, alice_http: httpx.AsyncClient, store: Store, tokens: Any
) -> None:
    await create(alice_http, "a")
    await create(alice_http, "b", deploy=False)
    async with http_for(api.url, tokens.bob) as bob:
        await create(bob, "c")
        async with watching(alice_http, "/v1/watch") as stream:
            first = [await stream.next() for _ in range(3)]
            assert [(e, d["project"]["name"]) for e, d in first[:2]] == [
                ("view", "a"),
                ("view", "b"),
            ]
            assert first[2] == ("synced", {"projects": 2})

            await create(bob, "d")  # not Alice's: nothing for her
            await create(alice_http, "e", deploy=False)
            event, view = await stream.next()
            assert (event, view["project"]["name"]) == ("view", "e")

            await operator_says(store, "a")
            event, view = await stream.next()
            assert (event, view["project"]["name"]) == ("view", "a")
            assert view["status"]["phase"] == "Running"

            destroyed = await alice_http.delete("/v1/projects/e")
            generation = destroyed.json()["project"]["generation"]
            event, view = await stream.next()
            assert view["project"]["deletion_requested"] is True
            assert await store.finish_deletion("e", generation)
            assert await stream.next() == ("deleted", {"project": "e"})


async def test_a_one_project_watch_ends_when_the_project_is_gone(
    alice_http: httpx.AsyncClient, store: Store
) -> None:
    await create(alice_http, "shop", deploy=False)
    async with watching(alice_http, "/v1/projects/shop/watch") as stream:
        await stream.next()
        generation = (await alice_http.delete("/v1/projects/shop")).json()["project"]["generation"]
        await stream.next()  # deletion requested
        assert await store.finish_deletion("shop", generation)
        assert await stream.next() == ("deleted", {"project": "shop"})
        with pytest.raises(EOFError):
            await stream.next()


async def test_one_listen_connection_serves_every_watcher(
    alice_http: httpx.AsyncClient, api: Api, database_url: str
) -> None:
    for name in ("a", "b", "c"):
        await create(alice_http, name)
    assert await listeners(database_url) == 0
    async with (
        watching(alice_http, "/v1/projects/a/watch") as a,
        watching(alice_http, "/v1/projects/b/watch") as b,
        watching(alice_http, "/v1/projects/c/watch") as c,
        watching(alice_http, "/v1/watch") as everything,
        watching(alice_http, "/v1/watch") as everything_again,
    ):
        for stream in (a, b, c, everything, everything_again):
            await stream.next()
        assert await watchers_shown(api) == 5
        await wait_for(lambda: _connected(api), "the listener")
        assert await listeners(database_url) == 1
        assert (await alice_http.post("/v1/projects/b/stop")).status_code == 200
        assert (await b.until(lambda e, _: e == "view"))["project"]["desired_state"] == "stopped"
        for stream in (everything, everything_again):
            await stream.until(lambda e, d: e == "view" and _is(d["project"], "b", "stopped"))

    async def released() -> bool:
        return await watchers_shown(api) == 0 and await listeners(database_url) == 0

    await wait_for(released, "the listener to close with the last watcher")


async def test_after_the_listen_connection_is_cut_the_watch_resends_what_changed(
    alice_http: httpx.AsyncClient, api: Api, database_url: str
) -> None:
    await create(alice_http, "shop")
    async with watching(alice_http, "/v1/projects/shop/watch") as stream:
        await stream.next()
        await wait_for(lambda: _connected(api), "the listener")
        admin = await asyncpg.connect(database_url)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()",
                LISTENER_NAME,
            )
        finally:
            await admin.close()
        assert killed == 1
        # Changed while nobody listens: no notification reaches the API, the resync does.
        assert (await alice_http.post("/v1/projects/shop/stop")).status_code == 200
        view = await stream.until(lambda e, _: e == "view")
        assert view["project"]["desired_state"] == "stopped"
        await wait_for(lambda: listeners(database_url), "a new listen connection")


async def test_shutting_down_ends_every_stream(alice_http: httpx.AsyncClient, api: Api) -> None:
    await create(alice_http, "shop")
    async with watching(alice_http, "/v1/projects/shop/watch") as stream:
        await stream.next()
        api.app.state.watches.shutdown()
        with pytest.raises(EOFError):
            await stream.next()
    refused = await alice_http.get("/v1/projects/shop/watch")
    assert refused.status_code == 503
    assert refused.json()["error"] == "shutting_down"


# `tether watch` and `--wait` against a simulated operator: the exit codes


async def test_watch_exits_0_once_the_current_generation_is_ready(
    alice: Cli, alice_http: httpx.AsyncClient, store: Store, api: Api
) -> None:
    await create(alice_http, "shop")
    watch = asyncio.create_task(alice("watch", "shop", "--timeout", "30"))
    await wait_for(lambda: _watchers(api, 1), "the watch stream")
    await operator_says(store, "shop", phase="Creating", ready=False, reconciling=True)
    await operator_says(store, "shop")
    done = await watch
    assert done.code == 0, done
    lines = done.out.splitlines()
    assert lines[-1] == "shop: ready: v1 is ready on 127.0.0.1:20000"
    assert any("pending" in line for line in lines[:-1])


async def test_a_status_of_an_older_generation_is_never_taken_as_converged(
    alice: Cli, alice_http: httpx.AsyncClient, store: Store
) -> None:
    await create(alice_http, "shop")  # generation 2
    await operator_says(store, "shop", observed=1)
    # Time enough for the first view to arrive on a loaded machine (see the test above).
    behind = await alice("watch", "shop", "--timeout", "2")
    assert behind.code == 2, behind
    assert "timed out after 2 s" in behind.failure
    assert "act on generation 2" in behind.failure
    # The status is of generation 2, but its Ready condition was carried over from generation 1
    # (as after a failed pass): not an answer either.
    await operator_says(store, "shop", conditions_of=1)
    stale = await alice("watch", "shop", "--timeout", "0.5")
    assert stale.code == 2, stale


async def test_watch_exits_1_when_stalled_or_when_the_rollout_failed(
    alice: Cli, alice_http: httpx.AsyncClient, store: Store
) -> None:
    await create(alice_http, "shop")
    await operator_says(
        store,
        "shop",
        phase="Stalled",
        ready=False,
        stalled=True,
        reason="ImageNotFound",
        message="image 'x' does not exist",
    )
    stalled = await alice("watch", "shop", "--timeout", "10")
    assert stalled.code == 1
    assert "stalled (ImageNotFound): image 'x' does not exist" in stalled.failure

    answer = await alice_http.post("/v1/projects/shop/deployments", json={"image": WORKLOAD})
    assert answer.status_code == 201
    await operator_says(store, "shop", failed_version=2, running_version=1)
    failed = await alice("watch", "shop", "--timeout", "10")
    assert failed.code == 1
    assert "the rollout of v2 failed" in failed.failure
    assert "v1 is running again" in failed.failure


async def test_watch_exits_2_on_timeout_and_never_0_on_an_error(
    alice: Cli, alice_http: httpx.AsyncClient
) -> None:
    await create(alice_http, "shop")
    # No operator runs here: the project never converges. The timeout leaves the first view
    # (a few ms on a quiet machine) ample time to arrive on a loaded one, so that the message
    # names what the project waits for, not the view.
    slow = await alice("watch", "shop", "--timeout", "2")
    assert slow.code == 2
    assert "waiting for shop: waiting for the operator" in slow.failure
    missing = await alice("watch", "nope")
    assert missing.code == 1
    assert "no project named 'nope'" in missing.failure
    refused = await alice.as_(TETHER_TOKEN="tth_wrong")("watch", "shop")
    assert refused.code == 1
    down = await alice.as_(TETHER_URL="http://127.0.0.1:9")("watch", "shop")
    assert down.code == 1
    assert "cannot connect" in down.failure
    usage = await alice("start", "shop", "--timeout", "3")
    assert usage.code == 2
    assert "--timeout goes with --wait" in usage.failure


async def test_watch_json_lines(alice: Cli, alice_http: httpx.AsyncClient, store: Store) -> None:
    await create(alice_http, "shop")
    await operator_says(store, "shop")
    lines = (await alice.ok("watch", "shop", "-o", "json")).json_lines()
    assert [line["type"] for line in lines] == ["view", "result"]
    assert lines[0]["verdict"] == "ready"
    assert lines[0]["project"]["name"] == "shop"
    assert lines[0]["status"]["phase"] == "Running"
    assert lines[1] == {
        "type": "result",
        "exit_code": 0,
        "message": "shop: ready: v1 is ready on 127.0.0.1:20000",
    }


async def test_watch_without_a_name_waits_for_every_project(
    alice: Cli, alice_http: httpx.AsyncClient, store: Store, api: Api
) -> None:
    assert (await alice.ok("watch")).out == "no projects to wait for\n"
    await create(alice_http, "a")
    await create(alice_http, "b")
    await create(alice_http, "idle", deploy=False)
    await operator_says(store, "idle", phase="Stopped", ready=False)
    watch = asyncio.create_task(alice("watch", "--timeout", "30"))
    await wait_for(lambda: _watchers(api, 1), "the watch stream")
    await operator_says(store, "a")
    await operator_says(store, "b")
    done = await watch
    assert done.code == 0, done
    assert done.out.splitlines()[-1] == "all 3 projects are as desired"

    await operator_says(store, "b", phase="Stalled", ready=False, stalled=True, reason="Boom")
    failed = await alice("watch", "--timeout", "30")
    assert failed.code == 1
    assert "1 of 3 projects failed: b: stalled (Boom)" in failed.failure


async def test_stop_wait_and_destroy_wait(
    alice: Cli, alice_http: httpx.AsyncClient, store: Store
) -> None:
    await create(alice_http, "shop")
    stopping = asyncio.create_task(alice("stop", "shop", "--wait", "--timeout", "30"))
    await wait_for(
        lambda: _desired(store, "shop", "stopped"), "the stop to be written", within_s=10
    )
    await operator_says(store, "shop", phase="Stopped", ready=False, message="stopped as desired")
    stopped = await stopping
    assert stopped.code == 0, stopped
    assert stopped.out.splitlines()[0] == "shop: desired stopped"
    assert stopped.out.splitlines()[-1] == "shop: stopped: stopped as desired"

    destroying = asyncio.create_task(alice("destroy", "shop", "--wait", "--timeout", "30"))
    snapshot = await wait_for(lambda: _deleting(store, "shop"), "the destroy to be written")
    assert await store.finish_deletion("shop", snapshot)
    destroyed = await destroying
    assert destroyed.code == 0, destroyed
    assert destroyed.out.splitlines()[-1] == "shop: deleted: destroyed as asked"


async def _desired(store: Store, name: str, state: str) -> bool:
    snapshot = await store.desired(name)
    return snapshot is not None and snapshot.project.desired_state == state


async def _deleting(store: Store, name: str) -> int | None:
    snapshot = await store.desired(name)
    if snapshot is None or not snapshot.project.deletion_requested:
        return None
    return snapshot.project.generation


class Proxy:
    """A loopback TCP proxy in front of the API whose connections the test can cut."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._open: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.connections = 0

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        self.cut()
        await self._server.wait_closed()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._port)
        pair = (writer, up_writer)
        self._open.add(pair)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._open.discard(pair)

    def cut(self) -> None:
        for client, upstream in list(self._open):
            client.transport.abort()
            upstream.transport.abort()


async def test_watch_reconnects_when_the_stream_drops(
    alice: Cli, alice_http: httpx.AsyncClient, api: Api, store: Store
) -> None:
    await create(alice_http, "shop")
    proxy = Proxy(int(api.url.rsplit(":", 1)[1]))
    async with proxy as url:
        watch = asyncio.create_task(alice.as_(TETHER_URL=url)("watch", "shop", "--timeout", "60"))
        await wait_for(lambda: _watchers(api, 1), "the watch stream")
        proxy.cut()
        await wait_for(lambda: _reconnected(proxy, api), "the watch to reconnect")
        await operator_says(store, "shop")
        done = await watch
    assert done.code == 0, done
    assert "reconnecting" in done.err
    assert done.out.splitlines()[-1] == "shop: ready: v1 is ready on 127.0.0.1:20000"


def _is(project: dict[str, Any], name: str, desired_state: str) -> bool:
    return bool(project["name"] == name and project["desired_state"] == desired_state)


async def _connected(api: Api) -> bool:
    return bool(api.app.state.watches.connected)


async def watchers_shown(api: Api) -> float:
    """The watch streams open, as the API's /metrics shows them (`tether_api_watchers`)."""
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        answer = await http.get("/metrics")
    assert answer.status_code == 200, answer.text
    [family] = [f for f in text_string_to_metric_families(answer.text) if f.name == WATCHERS]
    [sample] = family.samples
    return sample.value


async def _watchers(api: Api, count: int) -> bool:
    return await watchers_shown(api) == count


async def _reconnected(proxy: Proxy, api: Api) -> bool:
    return proxy.connections >= 2 and await watchers_shown(api) == 1


# With the real operator and Docker


@pytest.fixture
async def docker_cleanup(settings: Settings) -> AsyncIterator[None]:
    yield
    docker = aiodocker.Docker()
    try:
        await remove_containers(docker, settings.installation_id)
    finally:
        await docker.close()


StartOperator = Callable[[], Awaitable[None]]


@pytest.fixture
async def start_operator(
    settings: Settings, store: Store, docker_cleanup: None
) -> AsyncIterator[StartOperator]:
    """Starts the real operator (once), stopped and drained when the test ends."""
    operators = Operators()

    async def start() -> None:
        operators.start(settings, store)

    yield start
    await operators.stop()


@pytest.fixture
async def operator(start_operator: StartOperator) -> None:
    await start_operator()


@pytest.mark.docker
async def test_deploy_wait_and_every_write_wait_with_a_real_operator(
    operator: None, alice: Cli, port_range: PortRange
) -> None:
    endpoint = f"127.0.0.1:{port_range.first}"
    deployed = await alice("deploy", "shop", *HEALTHY_ARGS, "--wait", "--timeout", "60")
    assert deployed.code == 0, deployed
    assert deployed.out.splitlines()[-1] == f"shop: ready: v1 is ready on {endpoint}"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://{endpoint}/healthz")).status_code == 200

    assert (await alice.ok("watch", "shop", "--timeout", "10")).out.endswith(
        f"shop: ready: v1 is ready on {endpoint}\n"
    )
    stopped = await alice.ok("stop", "shop", "--wait", "--timeout", "60")
    assert stopped.out.splitlines()[-1] == "shop: stopped: stopped as desired"
    started = await alice.ok("start", "shop", "--wait", "--timeout", "60")
    assert started.out.splitlines()[-1] == f"shop: ready: v1 is ready on {endpoint}"
    restarted = await alice.ok("restart", "shop", "--wait", "--timeout", "60")
    assert restarted.out.splitlines()[-1] == f"shop: ready: v1 is ready on {endpoint}"
    v2 = await alice.ok("deploy", "shop", *HEALTHY_ARGS, "-e", "R=2", "--wait", "--timeout", "60")
    assert v2.out.splitlines()[-1] == f"shop: ready: v2 is ready on {endpoint}"
    back = await alice.ok("rollback", "shop", "--wait", "--timeout", "60", "-o", "json")
    lines = back.json_lines()
    assert lines[0]["type"] == "write"
    assert lines[0]["project"]["target_version"] == 1
    assert lines[-1]["exit_code"] == 0
    assert lines[-1]["message"] == f"shop: ready: v1 is ready on {endpoint}"
    gone = await alice.ok("destroy", "shop", "--wait", "--timeout", "60")
    assert gone.out.splitlines()[-1] == "shop: deleted: destroyed as asked"


@pytest.mark.docker
async def test_a_missing_image_exits_1(operator: None, alice: Cli) -> None:
    missing = await alice(
        "deploy", "nope", "--image", "tether-test/no-such-image:1", "--wait", "--timeout", "60"
    )
    assert missing.code == 1, missing
    assert "nope: failed: stalled (ImageNotFound)" in missing.failure
    assert "tether-test/no-such-image:1" in missing.failure


@pytest.mark.docker
async def test_an_endpoint_that_never_answers_exits_1(
    operator: None, alice: Cli, alice_http: httpx.AsyncClient
) -> None:
    await create(alice_http, "shop", deploy=False)
    never = {
        "image": WORKLOAD,
        "command": ["sleep", "1000"],
        "port": 8080,
        "health": {"type": "http", "path": "/healthz"},
        "ready_deadline_s": 3,
        "stop_grace_s": 1,
    }
    answer = await alice_http.post("/v1/projects/shop/deployments", json=never)
    assert answer.status_code == 201
    stalled = await alice("watch", "shop", "--timeout", "60")
    assert stalled.code == 1, stalled
    assert "shop: failed: stalled (Unhealthy)" in stalled.failure
    assert "endpoint does not answer" in stalled.failure


@pytest.mark.docker
async def test_a_failed_rollout_exits_1(
    operator: None, alice: Cli, alice_http: httpx.AsyncClient
) -> None:
    await alice.ok("deploy", "shop", *HEALTHY_ARGS, "--wait", "--timeout", "60")
    broken = {
        "image": WORKLOAD,
        "command": ["sleep", "1000"],
        "port": 8080,
        "health": {"type": "http", "path": "/healthz"},
        "ready_deadline_s": 3,
        "stop_grace_s": 1,
    }
    answer = await alice_http.post("/v1/projects/shop/deployments", json=broken)
    assert answer.status_code == 201
    failed = await alice("watch", "shop", "--timeout", "60")
    assert failed.code == 1, failed
    assert "the rollout of v2 failed: v2 was not ready within 3 s" in failed.failure
    assert "v1 is running again" in failed.failure


# As a person sees it: a real pseudo-terminal, its screen read by a terminal emulator


class Terminal:
    """A program on a real pseudo-terminal; `screen` is what a VT100 terminal shows of it."""

    def __init__(self, columns: int = 120, rows: int = 50) -> None:
        self.screen = pyte.Screen(columns, rows)
        self._feed = pyte.ByteStream(self.screen)
        self._size = struct.pack("HHHH", rows, columns, 0, 0)
        self.closed = asyncio.Event()

    async def start(self, argv: list[str], env: Mapping[str, str]) -> None:
        self._master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, self._size)
        try:
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdin=slave, stdout=slave, stderr=slave, env=dict(env)
            )
        finally:
            os.close(slave)
        asyncio.get_running_loop().add_reader(self._master, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self._master, 65536)
        except OSError:  # EIO: the program has exited and closed the terminal
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self._master)
            self.closed.set()
            return
        self._feed.feed(data)

    @property
    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    async def shows(self, *fragments: str, within_s: float = 30.0) -> str:
        async def showing() -> str | None:
            text = self.text
            return text if all(f in text for f in fragments) else None

        shown: str = await wait_for(showing, f"the screen to show {fragments}", within_s)
        return shown

    async def exit_code(self, within_s: float = 60.0) -> int:
        async with asyncio.timeout(within_s):
            code = await self.process.wait()
            await self.closed.wait()
        return code

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if not self.closed.is_set():
            asyncio.get_running_loop().remove_reader(self._master)
        os.close(self._master)


@pytest.fixture
async def terminal() -> AsyncIterator[Terminal]:
    shown = Terminal()
    yield shown
    await shown.close()


def tether_on_a_terminal(*argv: str) -> list[str]:
    return [sys.executable, "-c", "from tether.cli.main import main; main()", *argv]


def terminal_env(cli: Cli) -> dict[str, str]:
    return {
        **cli.env,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "TERM": "xterm-256color",
    }


@pytest.mark.docker
async def test_watch_on_a_terminal_shows_each_step_and_exits_0(
    terminal: Terminal,
    alice: Cli,
    alice_http: httpx.AsyncClient,
    start_operator: StartOperator,
    port_range: PortRange,
) -> None:
    await alice.ok("deploy", "shop", *HEALTHY_ARGS)  # generation 2; no operator yet
    await terminal.start(
        tether_on_a_terminal("watch", "shop", "--timeout", "120"), terminal_env(alice)
    )
    screen = await terminal.shows("desired", "running, deployment v1, generation 2")
    assert "nothing yet: waiting for the operator" in screen
    assert "waiting for shop: waiting for the operator (timeout in" in screen

    # Another client changes the desired state: the screen follows.
    await alice.ok("stop", "shop")
    screen = await terminal.shows("stopped, deployment v1, generation 3")
    assert "running, deployment v1" not in screen
    await alice.ok("start", "shop")
    await terminal.shows("running, deployment v1, generation 4")

    # The operator comes: the project converges, the view shows it, the watch exits 0.
    await start_operator()
    assert await terminal.exit_code() == 0
    screen = terminal.text
    endpoint = f"127.0.0.1:{port_range.first}"
    assert "generation 4, phase Running" in screen
    assert f"endpoint   {endpoint}" in screen
    for condition in ("Ready        True", "Reconciling  False", "Stalled      False"):
        assert condition in screen, screen
    assert "recent events" in screen
    assert "Ready" in screen.split("recent events", 1)[1]  # the `converged` event
    assert f"shop: ready: v1 is ready on {endpoint}" in screen
    assert "waiting for" not in screen


@pytest.mark.docker
async def test_watch_on_a_terminal_shows_why_a_project_stalls_and_exits_1(
    terminal: Terminal, alice: Cli, alice_http: httpx.AsyncClient, operator: None
) -> None:
    await create(alice_http, "shop", deploy=False)
    answer = await alice_http.post(
        "/v1/projects/shop/deployments", json={"image": "tether-test/no-such-image:1"}
    )
    assert answer.status_code == 201
    await terminal.start(
        tether_on_a_terminal("watch", "shop", "--timeout", "120"), terminal_env(alice)
    )
    assert await terminal.exit_code() == 1
    screen = terminal.text
    assert "phase Stalled" in screen
    assert "Stalled      True    ImageNotFound" in screen
    assert "next attempt in" in screen
    assert "last error" in screen
    assert "error: shop: failed: stalled (ImageNotFound)" in screen


async def test_watch_of_every_project_on_a_terminal(
    terminal: Terminal, alice: Cli, alice_http: httpx.AsyncClient, store: Store, api: Api
) -> None:
    await create(alice_http, "api")
    await create(alice_http, "web")
    await operator_says(
        store,
        "web",
        phase="Retrying",
        ready=False,
        reconciling=True,
        reason="DockerUnavailable",
        message="create: no answer in 30 s",
    )
    await terminal.start(tether_on_a_terminal("watch", "--timeout", "60"), terminal_env(alice))
    screen = await terminal.shows("NAME", "api", "web", "waiting for api:")
    assert "pending: waiting for the operator" in screen
    assert "pending: create: no answer in 30 s" in screen
    await operator_says(store, "api")
    screen = await terminal.shows("ready: v1 is ready on 127.0.0.1:20000")
    assert "waiting for web: create: no answer in 30 s" in screen
    await operator_says(store, "web")
    assert await terminal.exit_code() == 0
    screen = terminal.text
    assert screen.count("ready: v1 is ready on 127.0.0.1:20000") == 2
    assert "all 2 projects are as desired" in screen


@pytest.mark.docker
async def test_watch_shows_the_steps_of_a_start_first_rollout(operator: None, alice: Cli) -> None:
    """`tether watch` during a deploy: the endpoint routed to v2 (started and healthy beside v1)
    while v1 drains, v1 drained (stopped: nothing was in flight) and removed, then Ready; one
    line each, in order."""
    await alice.ok("deploy", "shop", *HEALTHY_ARGS, "--wait", "--timeout", "60")
    await alice.ok("deploy", "shop", *HEALTHY_ARGS, "-e", "R=2")
    watched = await alice.ok("watch", "shop", "--timeout", "60")
    events = [line.split(" ", 3)[3] for line in watched.out.splitlines() if ": event " in line]
    steps = [event.partition(":")[0] for event in events]
    assert "routed route v2" in steps, events
    routed = steps.index("routed route v2")
    assert steps[routed:] == [
        "routed route v2",
        "drained stop v1",
        "action remove v1",
        "converged Ready",
    ], events
    assert re.search(
        r"routing :\d+ to \S+-shop-v2-r0 \(127\.0\.0\.1:\d+\); \S+-shop-v1-r0 drains$",
        events[routed],
    ), events[routed]
    assert "replaced by v2 (nothing in flight)" in events[routed + 1]
    assert watched.out.splitlines()[-1].startswith("shop: ready: v2 is ready on 127.0.0.1:")
