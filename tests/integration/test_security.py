"""Security: tokens hashed at rest and read from the Authorization header only; failed
authentications rate-limited per client address; secret env values stored as given, passed to the
container, never shown by the API or the CLI, never logged; two installations on one engine ignore
each other's containers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiodocker
import asyncpg
import httpx
import pytest
import structlog
from support import Operators, serving, wait_for

from tether.api.app import create_app
from tether.api.migrator import migrate
from tether.api.models import (
    SECRET_MASK,
    ConditionType,
    DeploymentSpec,
    HttpCheck,
    Principal,
    TokenRefusal,
)
from tether.api.ratelimit import FailureLimiter
from tether.api.settings import Settings
from tether.api.store import TOKEN_TRUSTED_S, PortRange, Store
from tether.cli.main import run
from tether.cli.server import bind, serve
from tether.cli.signals import Stopper
from tether.operator.labels import LABEL_INSTALLATION, LABEL_PROJECT
from tether.operator.service import Operator

WORKLOAD = "tether-test/workload:latest"


def proxied(proxy_process: Any) -> dict[str, str]:
    """The settings that route an operator's endpoints through the test's own HAProxy."""
    return {
        "proxy_dir": str(proxy_process.config.directory),
        "proxy_socket": str(proxy_process.config.socket),
    }


SECRET = "s3cr3t-" + uuid.uuid4().hex  # unique: found nowhere by chance
ALICE = Principal(owner="alice")
SPEC: dict[str, Any] = {
    "image": WORKLOAD,
    "port": 8080,
    "health": {"type": "http", "path": "/healthz"},
    "env": {"PUBLIC": "shown", "API_KEY": SECRET},
    "secret_env": ["API_KEY"],
    "ready_deadline_s": 30,
    "stop_grace_s": 2,
}


@pytest.fixture
async def limited_url(store: Store) -> AsyncIterator[str]:
    """An API whose addresses may fail 3 authentications, then wait (a minute for all 3). Its
    server trusts X-Forwarded-For from loopback, as uvicorn does by default: how these tests come
    from other client addresses."""
    app = create_app(store, auth_limiter=FailureLimiter(burst=3, window_s=60))
    async with serving(app) as url:
        yield url


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def from_address(address: str, headers: Mapping[str, str] | None = None) -> dict[str, str]:
    return {"X-Forwarded-For": address, **(headers or {})}


# Tokens


async def test_tokens_are_stored_only_as_their_sha256(store: Store, database_url: str) -> None:
    token = await store.create_token("alice")
    conn = await asyncpg.connect(database_url)
    try:
        rows = [dict(r) for r in await conn.fetch("SELECT * FROM tokens")]
    finally:
        await conn.close()
    assert [r["hash"] for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
    assert token not in json.dumps(rows, default=str)
    assert token[4:] not in json.dumps(rows, default=str)
    assert await store.authenticate(token) == ALICE.model_copy(update={"token_id": 1})
    assert isinstance(await store.authenticate(token + "x"), TokenRefusal)
    assert isinstance(
        await store.authenticate(hashlib.sha256(token.encode()).hexdigest()), TokenRefusal
    )


async def test_a_deleted_token_stops_working_within_the_trust_period(
    store: Store, database_url: str
) -> None:
    token = await store.create_token("alice")
    assert isinstance(await store.authenticate(token), Principal)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DELETE FROM tokens")
    finally:
        await conn.close()

    async def refused() -> bool:
        return isinstance(await store.authenticate(token), TokenRefusal)

    await wait_for(refused, "the deleted token refused", within_s=TOKEN_TRUSTED_S + 2)


@pytest.mark.parametrize(
    ("params", "cookies"),
    [
        pytest.param({"token": "{t}"}, {}, id="query token"),
        pytest.param({"access_token": "{t}"}, {}, id="query access_token"),
        pytest.param({"api_key": "{t}"}, {}, id="query api_key"),
        pytest.param({"authorization": "Bearer {t}"}, {}, id="query authorization"),
        pytest.param({}, {"token": "{t}"}, id="cookie token"),
        pytest.param({}, {"access_token": "{t}"}, id="cookie access_token"),
        pytest.param({}, {"Authorization": "Bearer {t}"}, id="cookie authorization"),
        pytest.param({}, {"session": "{t}"}, id="cookie session"),
    ],
)
async def test_a_token_anywhere_but_the_authorization_header_is_refused(
    api_url: str, tokens: Any, params: dict[str, str], cookies: dict[str, str]
) -> None:
    fill = {k: v.format(t=tokens.alice) for k, v in params.items()}
    jar = {k: v.format(t=tokens.alice) for k, v in cookies.items()}
    async with httpx.AsyncClient(base_url=api_url, cookies=jar, timeout=10) as http:
        for method, path in [("GET", "/v1/projects"), ("POST", "/v1/projects/shop/start")]:
            refused = await http.request(method, path, params=fill)
            assert refused.status_code == 401, refused.text
            body = refused.json()
            assert body["message"] == "missing API token"
            assert "from that header only" in body["hint"]
        accepted = await http.get("/v1/projects", headers=bearer(tokens.alice))
        assert accepted.status_code == 200


# Failed authentications, rate-limited per client address


def test_failure_limiter_refills_over_its_window() -> None:
    now = [1000.0]
    limiter = FailureLimiter(burst=3, window_s=30, clock=lambda: now[0])  # one back every 10 s
    for _ in range(3):
        assert limiter.retry_after("a") is None
        limiter.failed("a")
    assert limiter.retry_after("a") == 10
    assert limiter.retry_after("b") is None  # per address
    now[0] += 4
    assert limiter.retry_after("a") == 6
    now[0] += 6
    assert limiter.retry_after("a") is None  # one failure regained
    limiter.failed("a")
    assert limiter.retry_after("a") == 10
    limiter.failed("a")  # concurrent requests may fail past the check: never below empty
    assert limiter.retry_after("a") == 10
    now[0] += 30
    assert limiter.retry_after("a") is None
    assert len(limiter) == 0  # full again: forgotten


def test_failure_limiter_remembers_a_bounded_number_of_addresses() -> None:
    limiter = FailureLimiter(burst=1, window_s=60, max_addresses=100)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100
    assert limiter.retry_after("10.0.3.231") is not None  # the latest ones are kept
    assert limiter.retry_after("10.0.0.0") is None


async def test_failed_authentications_are_limited_per_address(
    limited_url: str, tokens: Any
) -> None:
    async with httpx.AsyncClient(base_url=limited_url, timeout=10) as http:
        # Successful requests use none of the budget, however many.
        for _ in range(25):
            ok = await http.get(
                "/v1/projects", headers=from_address("192.0.2.1", bearer(tokens.alice))
            )
            assert ok.status_code == 200
        # Requests without a token are refused, and use none of it either.
        for _ in range(5):
            missing = await http.get("/v1/projects", headers=from_address("192.0.2.1"))
            assert missing.status_code == 401
        wrong = from_address("192.0.2.1", bearer("tth_wrong"))
        for _ in range(3):
            assert (await http.get("/v1/projects", headers=wrong)).status_code == 401
        limited = await http.get("/v1/projects", headers=wrong)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 20
        body = limited.json()
        assert set(body) == {"error", "message", "hint"}
        assert body["error"] == "too_many_failed_authentications"
        assert "192.0.2.1" in body["message"]
        # Refused before the token is looked at: guessing gains nothing while limited.
        guess = await http.post(
            "/v1/projects",
            json={"name": "x"},
            headers=from_address("192.0.2.1", bearer(tokens.alice)),
        )
        assert guess.status_code == 429
        # Other addresses are not affected.
        other = await http.get(
            "/v1/projects", headers=from_address("198.51.100.9", bearer(tokens.alice))
        )
        assert other.status_code == 200
        assert (await http.get("/v1/projects", headers=bearer("tth_wrong"))).status_code == 401


async def test_the_api_server_limits_failed_authentications(
    store: Store, database_url: str, port_range: PortRange
) -> None:
    """`tether api` (and `tether up`) pass a limiter configured by TETHER_AUTH_FAILURES."""
    settings = Settings(
        database_url=database_url,
        port_range=f"{port_range.first}-{port_range.last}",
        auth_failures=2,
        log_level="warning",
    )
    sock = bind("127.0.0.1", 0)
    stopper = Stopper()
    task = asyncio.create_task(serve(settings, store, stopper, sock=sock, with_operator=False))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:

            async def answering() -> bool:
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(answering, "the API")
            codes = [
                (await http.get("/v1/projects", headers=bearer("tth_wrong"))).status_code
                for _ in range(3)
            ]
            assert codes == [401, 401, 429]
    finally:
        stopper.request()
        await task
        sock.close()


# Secret env values


async def test_secret_env_values_are_masked_in_every_answer(
    client: httpx.AsyncClient, api_url: str, tokens: Any, store: Store
) -> None:
    assert (await client.post("/v1/projects", json={"name": "shop"})).status_code == 201
    deployed = await client.post("/v1/projects/shop/deployments", json=SPEC)
    assert deployed.status_code == 201, deployed.text
    masked = {"PUBLIC": "shown", "API_KEY": SECRET_MASK}
    assert deployed.json()["deployment"]["env"] == masked
    assert deployed.json()["deployment"]["secret_env"] == ["API_KEY"]
    assert SECRET not in deployed.text

    # Stored as given: the operator reads it so, and passes it to the container.
    desired = await store.desired("shop")
    assert desired is not None
    assert desired.target is not None
    assert desired.target.version == 1
    assert desired.target.env == {"PUBLIC": "shown", "API_KEY": SECRET}

    answers = []
    admin = {"Authorization": f"Bearer {tokens.admin}"}
    for path in [
        "/v1/projects",
        "/v1/projects/shop",
        "/v1/projects/shop/deployments",
        "/v1/projects/shop/deployments/1",
        "/v1/projects/shop/status",
        "/v1/projects/shop/events",
    ]:
        for headers in ({}, admin):
            answer = await client.get(path, headers=headers)
            assert answer.status_code == 200, (path, answer.text)
            answers.append(answer)
    assert not [a.request.url for a in answers if SECRET in a.text]
    listed = await client.get("/v1/projects/shop/deployments")
    assert [d["env"] for d in listed.json()] == [masked]
    assert (await client.get("/v1/projects/shop/deployments/1")).json()["env"] == masked

    # Watch streams: what they send first (every project's view, events included).
    for path, last in [("/v1/projects/shop/watch", "view"), ("/v1/watch", "synced")]:
        received = await read_stream(client, path, until=last)
        lines = received.splitlines()
        views = [
            json.loads(lines[n + 1].removeprefix("data: "))
            for n, line in enumerate(lines)
            if line == "event: view"
        ]
        assert [view["project"]["name"] for view in views] == ["shop"], path
        # A view is the project, its status and its events: no deployment, so no env at all.
        assert set(views[0]) == {"project", "status", "events"}, path
        assert "API_KEY" not in received, path
        assert SECRET not in received, path


async def read_stream(http: httpx.AsyncClient, path: str, *, until: str) -> str:
    """The stream's lines up to the first `until` event and its data."""
    received: list[str] = []
    async with asyncio.timeout(10), http.stream("GET", path) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        async for line in lines:
            received.append(line)
            if line == f"event: {until}":
                received.append(await anext(lines))
                break
    return "\n".join(received)


async def test_secret_env_must_name_keys_of_env(
    client: httpx.AsyncClient, database_url: str
) -> None:
    await client.post("/v1/projects", json={"name": "shop"})
    refused = await client.post(
        "/v1/projects/shop/deployments",
        json={"image": WORKLOAD, "env": {"A": "1"}, "secret_env": ["A", "B"]},
    )
    assert refused.status_code == 422
    assert "secret_env names 'B', not in env" in refused.json()["message"]
    twice = await client.post(
        "/v1/projects/shop/deployments",
        json={"image": WORKLOAD, "env": {"A": "1"}, "secret_env": ["A", "A"]},
    )
    assert twice.status_code == 201
    assert twice.json()["deployment"]["secret_env"] == ["A"]
    # The database holds the same rule against any other writer.
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError, match="deployments_secret_env_in_env"):
            await conn.execute(
                "INSERT INTO deployments (project, version, image, env, secret_env, created_by)"
                " VALUES ('shop', 9, 'x', '{\"A\": \"1\"}', '{B}', 'psql')"
            )
    finally:
        await conn.close()


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


async def tether(capsys: pytest.CaptureFixture[str], env: Mapping[str, str], *argv: str) -> Result:
    capsys.readouterr()
    code = await asyncio.to_thread(run, list(argv), dict(env))
    out, err = capsys.readouterr()
    return Result(code, out, err)


async def test_the_cli_never_shows_a_secret(
    capsys: pytest.CaptureFixture[str], api_url: str, tokens: Any, tmp_path: Any
) -> None:
    env = {
        "TETHER_CONFIG": str(tmp_path / "config.json"),
        "TETHER_URL": api_url,
        "TETHER_TOKEN": tokens.alice,
        "FROM_SHELL": SECRET + "-shell",
    }
    image = ("--image", WORKLOAD)
    deployed = await tether(
        capsys, env, "deploy", "shop", *image, "-e", "PUBLIC=shown", "--secret-env",
        f"API_KEY={SECRET}", "--secret-env", "FROM_SHELL", "-o", "json",
    )  # fmt: skip
    assert deployed.code == 0, deployed
    answer = json.loads(deployed.out)
    assert answer["deployment"]["env"] == {
        "PUBLIC": "shown",
        "API_KEY": SECRET_MASK,
        "FROM_SHELL": SECRET_MASK,
    }
    assert answer["deployment"]["secret_env"] == ["API_KEY", "FROM_SHELL"]
    shown = await tether(capsys, env, "deploy", "shop", *image, "-s", f"API_KEY={SECRET}")
    assert shown.code == 0, shown
    outputs = [deployed, shown]
    for argv in [
        ("deployments", "shop"),
        ("deployments", "shop", "-o", "json"),
        ("status", "shop"),
        ("status", "shop", "-o", "json"),
        ("events", "shop"),
    ]:
        result = await tether(capsys, env, *argv)
        assert result.code == 0, (argv, result)
        outputs.append(result)
    assert not [r for r in outputs if SECRET in r.out + r.err]
    table = outputs[2].out
    for shown_key in ["API_KEY (secret)", "FROM_SHELL (secret)", "PUBLIC"]:
        assert shown_key in table

    unset = await tether(capsys, env, "deploy", "shop", *image, "--secret-env", "NOT_SET")
    assert unset.code == 2
    assert "NOT_SET is not set in this shell" in unset.err
    both = await tether(capsys, env, "deploy", "shop", *image, "-e", "A=1", "-s", "A=2")
    assert both.code == 2
    assert "A given both as --env and as --secret-env" in both.err


# With the operator and a real Docker engine


@pytest.fixture
def installation() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def docker_api(installation: str) -> AsyncIterator[aiodocker.Docker]:
    """Docker as an outside actor; removes this test's containers (of every installation whose
    id starts with this test's) afterwards."""
    docker = aiodocker.Docker()
    yield docker
    for container in await docker.containers.list(all=True):
        labels = container._container.get("Labels") or {}
        if labels.get(LABEL_INSTALLATION, "").startswith(installation):
            await container.delete(force=True)
    await docker.close()


RunOperator = Callable[[Settings, Store], Awaitable[Operator]]


@pytest.fixture
async def run_operator(docker_api: aiodocker.Docker) -> AsyncIterator[RunOperator]:
    """In-process operators, stopped before `docker_api` removes the containers."""
    operators = Operators()

    async def start(settings: Settings, store: Store) -> Operator:
        return operators.start(settings, store)

    yield start
    await operators.stop()


async def ready(store: Store, name: str) -> bool:
    snap = await store.desired(name)
    if snap is None or snap.status is None:
        return False
    condition = snap.status.condition(ConditionType.READY)
    return (
        snap.status.observed_generation == snap.project.generation
        and condition is not None
        and condition.status == "True"
    )


@pytest.mark.docker
async def test_a_secret_reaches_the_container_and_no_log(
    store: Store,
    database_url: str,
    port_range: PortRange,
    installation: str,
    docker_api: aiodocker.Docker,
    run_operator: RunOperator,
    caplog: pytest.LogCaptureFixture,
    proxy_process: Any,
) -> None:
    settings = Settings(
        database_url=database_url,
        installation_id=installation,
        port_range=f"{port_range.first}-{port_range.last}",
        **proxied(proxy_process),
    )
    token = await store.create_token("alice")
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logged:
        await run_operator(settings, store)
        app = create_app(store, auth_limiter=FailureLimiter(10, 60))
        async with (
            serving(app) as url,
            httpx.AsyncClient(base_url=url, headers=bearer(token), timeout=10) as http,
        ):
            await http.post("/v1/projects", json={"name": "shop"})
            deployed = await http.post("/v1/projects/shop/deployments", json=SPEC)
            assert deployed.status_code == 201, deployed.text
            await wait_for(lambda: ready(store, "shop"), "shop Ready")
            watched = await read_stream(http, "/v1/projects/shop/watch", until="view")
            events = await http.get("/v1/projects/shop/events")
    assert "Running" in watched
    assert SECRET not in watched
    assert SECRET not in events.text
    [container] = await docker_api.containers.list(
        filters={"label": [f"{LABEL_INSTALLATION}={installation}", f"{LABEL_PROJECT}=shop"]}
    )
    inspected = await container.show()
    assert f"API_KEY={SECRET}" in inspected["Config"]["Env"]
    assert "PUBLIC=shown" in inspected["Config"]["Env"]
    assert logged, "the operator logs its passes"
    assert SECRET not in repr(logged)
    assert SECRET not in caplog.text


@pytest.fixture
async def other_store(
    new_database: Callable[[], Awaitable[str]], port_range: PortRange
) -> AsyncIterator[Store]:
    """A second installation's database (requested before `run_operator`, so that operators
    stop before it goes), with the upper half of the test's host ports."""
    dsn = await new_database()
    await migrate(dsn)
    half = (port_range.first + port_range.last) // 2
    connected = await Store.connect(dsn, PortRange(half + 1, port_range.last))
    yield connected
    await connected.close()


@pytest.mark.docker
async def test_two_installations_on_one_engine_ignore_each_other(
    store: Store,
    database_url: str,
    other_store: Store,
    port_range: PortRange,
    installation: str,
    docker_api: aiodocker.Docker,
    run_operator: RunOperator,
    proxy_process: Any,
) -> None:
    """Two tether installations (two databases, two installation ids) on one Docker engine,
    each with a project named shop: both converge, and neither touches the other's container,
    even when its own shop is destroyed."""
    green_store = other_store
    half = (port_range.first + port_range.last) // 2
    blue = Settings(
        database_url=database_url,
        installation_id=f"{installation}-blue",
        port_range=f"{port_range.first}-{half}",
        resync_interval_s=0.5,
        **proxied(proxy_process),  # one proxy for both: each reads only its own ports' routes
    )
    green = Settings(
        database_url=green_store.dsn,
        installation_id=f"{installation}-green",
        port_range=f"{half + 1}-{port_range.last}",
        resync_interval_s=0.5,
        **proxied(proxy_process),
    )
    spec = DeploymentSpec(
        image=WORKLOAD,
        port=8080,
        health=HttpCheck(type="http", path="/healthz"),
        stop_grace_s=1,
    )
    operators = []
    for settings, each in [(blue, store), (green, green_store)]:
        operators.append(await run_operator(settings, each))
        await each.create_project("shop", ALICE)
        await each.deploy("shop", spec, ALICE)
    await wait_for(lambda: ready(store, "shop"), "blue's shop Ready")
    await wait_for(lambda: ready(green_store, "shop"), "green's shop Ready")

    async def shops() -> dict[str, dict[str, Any]]:
        listed = await docker_api.containers.list(
            all=True, filters={"label": [f"{LABEL_PROJECT}=shop"]}
        )
        found = {}
        for container in listed:
            data = await container.show()
            owner = data["Config"]["Labels"].get(LABEL_INSTALLATION, "")
            if owner.startswith(installation):
                found[owner] = data
        return found

    both = await shops()
    assert set(both) == {blue.installation_id, green.installation_id}
    assert both[blue.installation_id]["Name"] == f"/tether-{blue.installation_id}-shop-v1-r0"
    assert both[green.installation_id]["Name"] == f"/tether-{green.installation_id}-shop-v1-r0"
    assert all(c["State"]["Running"] for c in both.values())

    # Blue destroys its shop: its container goes, green's stays, untouched.
    await store.destroy("shop", ALICE)
    await wait_for(lambda: _gone(store, "shop"), "blue's shop gone")
    await wait_for(
        lambda: _only(shops, green.installation_id), "only green's container", within_s=10
    )
    # Neither sees anything to do in the other's container: not an orphan of blue's to
    # remove, not a drift of green's to repair.
    assert [await operator.resync() for operator in operators] == [0, 0]
    after = await shops()
    assert set(after) == {green.installation_id}
    kept = after[green.installation_id]
    assert kept["Id"] == both[green.installation_id]["Id"]
    assert kept["State"]["StartedAt"] == both[green.installation_id]["State"]["StartedAt"]
    assert await ready(green_store, "shop")


async def _gone(store: Store, name: str) -> bool:
    return await store.desired(name) is None


async def _only(shops: Callable[[], Awaitable[dict[str, Any]]], owner: str) -> bool:
    return set(await shops()) == {owner}
