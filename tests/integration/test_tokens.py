"""Token lifecycle: listed without their secrets, revoked (refused by every running API process at
once, and within the cache bound by one that missed the notification), expiring, read-only; the
events of a write name the token that asked for it; a token's last use is recorded, at most once a
minute."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import httpx
import pytest
from servers import server_process
from support import free_ports, wait_for

from tether.api.app import create_app
from tether.api.models import Principal, TokenRefusal
from tether.api.store import PortRange, Store
from tether.cli.main import run

CACHE_FOREVER_S = 3600.0  # a cache that only a revocation's notification can empty in a test


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def long_cache_store(database_url: str, port_range: PortRange) -> Store:
    store = await Store.connect(database_url, port_range, token_trusted_s=CACHE_FOREVER_S)
    yield store  # type: ignore[misc]
    await store.close()


async def test_an_expired_token_is_refused_saying_so_and_never_trusted_past_its_expiry(
    long_cache_store: Store, database_url: str
) -> None:
    new = await long_cache_store.issue_token("alice", expires_in_s=1.0)
    assert new.expires_at is not None
    first = await long_cache_store.authenticate(new.token)
    assert isinstance(first, Principal)
    assert first.token_id == new.id

    async def refused() -> TokenRefusal | None:
        found = await long_cache_store.authenticate(new.token)
        return found if isinstance(found, TokenRefusal) else None

    # The cache would trust it for an hour: it is refused once it expires all the same.
    refusal = await wait_for(refused, "the expired token refused", within_s=5)
    assert refusal.reason == "expired"
    assert f"the API token {new.id} expired at " in refusal.message


async def test_an_expired_token_is_answered_401_with_the_reason(store: Store, api_url: str) -> None:
    expired = await store.issue_token("alice", expires_in_s=-1.0)
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as http:
        answer = await http.get("/v1/projects", headers=bearer(expired.token))
    assert answer.status_code == 401
    assert answer.json()["message"].startswith(f"the API token {expired.id} expired at ")
    assert "tether token create" in answer.json()["hint"]


async def test_a_read_only_token_reads_and_watches_and_every_write_is_refused_with_403(
    store: Store, api_url: str
) -> None:
    writer = await store.create_token("alice")
    reader = await store.issue_token("alice", read_only=True)
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as http:
        created = await http.post("/v1/projects", json={"name": "shop"}, headers=bearer(writer))
        assert created.status_code == 201
        spec = {"image": "nginx:1.25"}
        assert (await http.get("/v1/projects", headers=bearer(reader.token))).status_code == 200
        assert (await http.get("/v1/projects/shop", headers=bearer(reader.token))).is_success
        events = await http.get("/v1/projects/shop/events", headers=bearer(reader.token))
        assert events.status_code == 200
        async with http.stream(
            "GET", "/v1/projects/shop/watch", headers=bearer(reader.token)
        ) as stream:
            assert stream.status_code == 200
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    assert line == "event: view"
                    break
        writes = [
            ("POST", "/v1/projects", {"name": "other"}),
            ("POST", "/v1/projects/shop/deployments", spec),
            ("POST", "/v1/projects/shop/start", None),
            ("POST", "/v1/projects/shop/stop", None),
            ("POST", "/v1/projects/shop/restart", None),
            ("POST", "/v1/projects/shop/rollback", None),
            ("DELETE", "/v1/projects/shop", None),
        ]
        for method, path, body in writes:
            answer = await http.request(method, path, json=body, headers=bearer(reader.token))
            assert answer.status_code == 403, (method, path, answer.text)
            refusal = answer.json()
            assert refusal["error"] == "read_only_token"
            assert f"token {reader.id} is read-only" in refusal["message"]
            assert "nothing was changed" in refusal["message"]
            assert "--read-only" in refusal["hint"]
        after = (await http.get("/v1/projects/shop", headers=bearer(writer))).json()
    assert after["project"]["generation"] == created.json()["project"]["generation"]
    assert after["project"]["deletion_requested"] is False
    assert [v.project.name for v in await store.list_projects(Principal(owner="alice"))] == ["shop"]


async def test_a_write_event_names_the_token_that_asked_for_it(store: Store, api_url: str) -> None:
    new = await store.issue_token("alice")
    async with httpx.AsyncClient(base_url=api_url, headers=bearer(new.token), timeout=10) as http:
        assert (await http.post("/v1/projects", json={"name": "shop"})).status_code == 201
        deployed = await http.post("/v1/projects/shop/deployments", json={"image": "nginx:1"})
        assert deployed.status_code == 201
        # A stop and a start are the API's one-statement writes: their events name it too.
        assert (await http.post("/v1/projects/shop/stop")).status_code == 200
        assert (await http.post("/v1/projects/shop/start")).status_code == 200
        events = (await http.get("/v1/projects/shop/events")).json()
    assert [(e["reason"], e["token_id"]) for e in events] == [
        ("Created", new.id),
        ("Deployed", new.id),
        ("Stop", new.id),
        ("Start", new.id),
    ]


async def test_last_use_is_recorded_at_most_once_a_minute(
    database_url: str, port_range: PortRange
) -> None:
    store = await Store.connect(database_url, port_range, token_trusted_s=0)
    try:
        new = await store.issue_token("alice")
        assert [t.last_used_at for t in await store.tokens()] == [None]
        assert isinstance(await store.authenticate(new.token), Principal)
        (first,) = [t.last_used_at for t in await store.tokens()]
        assert first is not None
        for _ in range(5):  # each a lookup in Postgres (no cache): no write
            assert isinstance(await store.authenticate(new.token), Principal)
        assert [t.last_used_at for t in await store.tokens()] == [first]
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("UPDATE tokens SET last_used_at = now() - interval '61 seconds'")
        finally:
            await conn.close()
        assert isinstance(await store.authenticate(new.token), Principal)
        (later,) = [t.last_used_at for t in await store.tokens()]
        assert later is not None
        assert later > first
    finally:
        await store.close()


async def test_a_revocation_unheard_is_bounded_by_the_cache(
    database_url: str, port_range: PortRange
) -> None:
    """A store that never hears the notification (no listener: as when its listener is down)
    still refuses a revoked token once its cache entry is older than `token_trusted_s`."""
    trusted_s = 1.0
    deaf = await Store.connect(database_url, port_range, token_trusted_s=trusted_s)
    other = await Store.connect(database_url, port_range)
    try:
        new = await deaf.issue_token("alice")
        assert isinstance(await deaf.authenticate(new.token), Principal)
        assert await other.revoke_token(new.id) is not None

        async def refused() -> TokenRefusal | None:
            found = await deaf.authenticate(new.token)
            return found if isinstance(found, TokenRefusal) else None

        refusal = await wait_for(refused, "the revoked token refused", within_s=trusted_s + 2)
        assert refusal.reason == "revoked"
    finally:
        await deaf.close()
        await other.close()


async def cli(
    env: dict[str, str], *argv: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """`tether ARGV` in a thread (its commands run an event loop of their own)."""
    capsys.readouterr()
    code = await asyncio.to_thread(run, list(argv), env)
    out, err = capsys.readouterr()
    return code, out, err


async def test_token_commands_create_list_and_revoke_without_ever_showing_a_token(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"TETHER_DATABASE_URL": database_url}
    code, out, err = await cli(
        env,
        "token",
        "create",
        "--owner",
        "alice",
        "--read-only",
        "--expires-in",
        "30d",
        capsys=capsys,
    )
    assert code == 0, err
    token = out.strip()
    assert token.startswith("tth_")
    assert "created read-only token 1 for alice, expiring " in err
    code, out, err = await cli(env, "token", "create", "--owner", "root", "--admin", capsys=capsys)
    assert code == 0, err
    admin_token = out.strip()

    code, table, err = await cli(env, "token", "list", capsys=capsys)
    assert code == 0, err
    lines = table.splitlines()
    assert lines[0].split() == ["ID", "OWNER", "SEES", "MAY", "CREATED", "LAST", "USED", "EXPIRES"]
    assert lines[1].split()[:4] == ["1", "alice", "owner", "read-only"]
    assert lines[1].split()[-2:] == ["in", "29d"]  # 30 days less a moment
    assert lines[2].split()[:4] == ["2", "root", "admin", "read-write"]
    assert lines[2].split()[-1] == "never"
    code, listed, err = await cli(env, "token", "list", "-o", "json", capsys=capsys)
    assert code == 0, err
    rows = json.loads(listed)
    assert [(r["id"], r["owner"], r["admin"], r["read_only"]) for r in rows] == [
        (1, "alice", False, True),
        (2, "root", True, False),
    ]
    assert rows[0]["expires_at"] is not None
    assert rows[0]["revoked_at"] is None
    for shown in (table, listed):
        assert token not in shown
        assert admin_token not in shown
        assert token[4:12] not in shown

    code, out, err = await cli(env, "token", "revoke", "1", capsys=capsys)
    assert code == 0, err
    assert out.startswith("token 1 revoked at ")
    code, table, err = await cli(env, "token", "list", capsys=capsys)
    assert "revoked" in table.splitlines()[1]
    code, out, err = await cli(env, "token", "revoke", "99", capsys=capsys)
    assert (code, err) == (1, "error: there is no token 99; list them with `tether token list`\n")
    for bad in ("0d", "30", "3 months", "-1d"):
        code, out, err = await cli(
            env, "token", "create", "--owner", "alice", "--expires-in", bad, capsys=capsys
        )
        assert code == 2, (bad, err)
        assert "is not a duration" in err, err


async def test_a_revoked_token_is_refused_at_once_by_every_running_api_process(
    database_url: str, store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two `tether api` processes, each caching tokens for an hour: only the revocation's
    notification can make them refuse the token, and both do within the stated bound (5 s)."""
    new = await store.issue_token("alice")
    ports = free_ports(2)
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    base = {
        "TETHER_DATABASE_URL": database_url,
        "TETHER_TOKEN_CACHE_S": str(CACHE_FOREVER_S),
        "TETHER_LOG_FORMAT": "json",
    }
    async with (
        server_process(
            "api", {**base, "TETHER_API_PORT": str(ports[0])}, tmp_path / "a.log", urls[0]
        ) as first,
        server_process(
            "api", {**base, "TETHER_API_PORT": str(ports[1])}, tmp_path / "b.log", urls[1]
        ) as second,
        httpx.AsyncClient(headers=bearer(new.token), timeout=5) as http,
    ):
        for url in urls:
            assert (await http.get(f"{url}/v1/projects")).status_code == 200  # now cached

        async def listening() -> bool:
            conn = await asyncpg.connect(database_url)
            try:
                count = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    "tether-api-tokens",
                )
            finally:
                await conn.close()
            return bool(count == 2)

        await wait_for(listening, "both API processes listening for revocations", within_s=10)
        code, _, err = await cli(
            {"TETHER_DATABASE_URL": database_url}, "token", "revoke", str(new.id), capsys=capsys
        )
        assert code == 0, err

        async def refused_by_both() -> bool:
            answers = [await http.get(f"{url}/v1/projects") for url in urls]
            return all(a.status_code == 401 for a in answers)

        await wait_for(refused_by_both, "the revoked token refused by both", within_s=5)
        for url in urls:
            answer = await http.get(f"{url}/v1/projects")
            assert answer.json()["message"].startswith(f"the API token {new.id} was revoked at ")
    for server in (first, second):
        assert new.token not in server.output()
        heard = [json.loads(line) for line in server.output().splitlines() if "revoked" in line]
        assert [(r["event"], r["token_id"]) for r in heard] == [
            ("token revoked: refused from now on", new.id)
        ]


def test_create_app_has_no_route_that_reads_a_token_list() -> None:
    """Tokens are managed with the database (`tether token ...`), never over the API."""
    paths = create_app(None).openapi()["paths"]  # type: ignore[arg-type]
    assert not [p for p in paths if "token" in p]
