"""Webhooks end to end, against a real receiver on loopback (tests/receiver.py) and real Postgres:
hooks made through the API, events written the way the operator writes them (`write_status`),
and the operator's sender delivering the outbox.

Signatures verify with the Standard Webhooks reference library (`standardwebhooks`); a receiver
that is down for a while gets everything afterwards, in order per project; one that never
answers, streams forever, answers hugely or redirects costs a bounded attempt, recorded; the API
refuses bad hooks with a message saying what to do, and owners see only their own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import standardwebhooks
import structlog
from receiver import Receiver
from support import wait_for
from tcpproxy import TcpProxy

from tether.api.models import EventKind, NewEvent, Principal, Status
from tether.api.settings import Settings
from tether.api.store import PortRange, Store
from tether.operator.webhooks.post import ANSWER_BYTES
from tether.operator.webhooks.sender import WebhookSender

ALICE = Principal(owner="alice")
BOB = Principal(owner="bob")
ADMIN = Principal(owner="root", admin=True)
EPOCH = 1


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Short bounds, so that retries and timeouts happen within a test."""
    return settings.model_copy(
        update={
            "webhook_connect_timeout_s": 1.0,
            "webhook_read_timeout_s": 1.0,
            "webhook_timeout_s": 1.5,
            "webhook_retry_max_s": 0.3,
        }
    )


@asynccontextmanager
async def sending(store: Store, settings: Settings) -> AsyncIterator[WebhookSender]:
    sender = WebhookSender(store, settings)
    task = asyncio.create_task(sender.run(EPOCH))
    try:
        yield sender
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def project(store: Store, name: str, owner: Principal = ALICE) -> None:
    await store.create_project(name, owner)


async def event(store: Store, name: str, kind: EventKind, reason: str, message: str) -> None:
    """An outcome event, written as a pass writes it: with its status, in one transaction."""
    status = Status(project=name, phase="Running", crash_count=2, last_exit_code=137)
    await store.write_status(status, [NewEvent(kind, reason, message)], actor="operator")


async def add_hook(http: httpx.AsyncClient, url: str, events: list[str]) -> dict[str, Any]:
    answer = await http.post("/v1/webhooks", json={"url": url, "events": events})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def one_converged(store: Store, http: httpx.AsyncClient, receiver: Receiver) -> int:
    """A hook for `converged`, and one such event of alice's shop: the hook's id."""
    hook = (await add_hook(http, receiver.url, ["converged"]))["webhook"]["id"]
    await project(store, "shop")
    await event(store, "shop", EventKind.CONVERGED, "Ready", "v1 is ready")
    return int(hook)


async def deliveries(http: httpx.AsyncClient, hook: int) -> list[dict[str, Any]]:
    answer = await http.get(f"/v1/webhooks/{hook}/deliveries")
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def all_delivered(http: httpx.AsyncClient, hook: int, count: int) -> Callable[[], Any]:
    async def check() -> list[dict[str, Any]] | None:
        found = await deliveries(http, hook)
        done = len(found) == count and all(d["state"] == "delivered" for d in found)
        return found if done else None

    return check


async def test_a_delivery_is_signed_as_standard_webhooks_verify_it(
    store: Store, client: httpx.AsyncClient, receiver: Receiver, fast: Settings
) -> None:
    created = await add_hook(client, receiver.url, ["converged", "crash_loop"])
    secret = created["secret"]
    assert secret.startswith("whsec_")
    await project(store, "shop")
    await event(store, "shop", EventKind.HEALTH, "Crashed", "crash 2: exited with code 137")
    await event(store, "shop", EventKind.ACTION, "create v1", "not a webhook event")

    with structlog.testing.capture_logs() as logged:
        async with sending(store, fast):
            [delivery] = await wait_for(all_delivered(client, created["webhook"]["id"], 1), "sent")
    assert any(e["event"] == "webhook attempt" for e in logged)
    assert secret not in repr(logged)
    assert secret.removeprefix("whsec_") not in repr(logged)
    [request] = receiver.received
    payload = standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    assert payload["type"] == "crash_loop"
    assert payload["data"]["project"] == "shop"
    assert payload["data"]["owner"] == "alice"
    assert payload["data"]["message"] == "crash 2: exited with code 137"
    assert payload["data"]["status"]["crash_count"] == 2
    assert payload["data"]["status"]["last_exit_code"] == 137
    assert request.headers["webhook-id"] == delivery["message_id"]
    assert request.headers["content-type"] == "application/json"
    assert delivery["attempts"] == 1
    assert delivery["last_status"] == 200
    assert delivery["last_answer"] == "HTTP 200: thanks"
    assert delivery["next_attempt_at"] is None

    # A body changed on the way, or another secret, does not verify.
    tampered = request.body.replace(b"shop", b"shoq")
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(tampered, request.headers)
    other = (await add_hook(client, receiver.url, ["stalled"]))["secret"]
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(other).verify(request.body, request.headers)


async def test_a_receiver_down_for_a_while_gets_everything_after_in_order_per_project(
    store: Store, client: httpx.AsyncClient, receiver: Receiver, fast: Settings
) -> None:
    hook = (await add_hook(client, receiver.url, ["converged", "stalled"]))["webhook"]["id"]
    await project(store, "shop")
    await project(store, "blog")
    await receiver.stop()
    written: dict[str, list[str]] = {"shop": [], "blog": []}
    async with sending(store, fast):
        for i in range(6):
            for name in written:
                message = f"{name} event {i}"
                kind = EventKind.CONVERGED if i % 2 else EventKind.GAVE_UP
                await event(store, name, kind, "Ready" if i % 2 else "ImageNotFound", message)
                written[name].append(message)

        async def retried() -> list[dict[str, Any]] | None:
            found = await deliveries(client, hook)
            # An attempt counts from its claim and records its answer after it: wait for each
            # project's tried delivery and its answer, not only for one delivery's count.
            tried = [d for d in found if d["attempts"]]
            answered = len(tried) >= len(written) and all(d["last_answer"] for d in tried)
            return found if answered and any(d["attempts"] >= 3 for d in tried) else None

        down = await wait_for(retried, "attempts against the receiver while it is down")
        # In order per project: only the oldest of each project was tried while it was down.
        tried = sorted(d["id"] for d in down if d["attempts"] > 0)
        firsts = sorted(min(d["id"] for d in down if d["project"] == n) for n in written)
        assert tried == firsts
        assert all(
            d["last_answer"].startswith("no answer: ConnectError") for d in down if d["attempts"]
        )
        assert all(d["state"] == "pending" for d in down)
        await receiver.start()
        done = await wait_for(all_delivered(client, hook, 12), "all delivered after the outage")

    ids = receiver.ids()
    assert set(ids) == {d["message_id"] for d in done}, "none lost"
    for name, messages in written.items():
        arrived = [r.payload["data"]["message"] for r in receiver.received]
        first_seen = list(dict.fromkeys(m for m in arrived if m.startswith(name)))
        assert first_seen == messages, f"{name}'s deliveries out of order"
    types = {r.payload["data"]["message"]: r.payload["type"] for r in receiver.received}
    assert types["shop event 0"] == "stalled"
    assert types["shop event 1"] == "converged"


@pytest.mark.parametrize("mode", ["silent", "stream"])
async def test_a_receiver_that_never_answers_or_never_ends_costs_one_bounded_attempt(
    mode: str, store: Store, client: httpx.AsyncClient, receiver: Receiver, fast: Settings
) -> None:
    receiver.mode = mode  # type: ignore[assignment]
    hook = await one_converged(store, client, receiver)
    async with sending(store, fast):

        async def timed_out() -> dict[str, Any] | None:
            [d] = await deliveries(client, hook)
            return d if d["attempts"] >= 1 and d["last_answer"] else None

        delivery = await wait_for(timed_out, f"a recorded attempt against a {mode} receiver")
        first = receiver.received[0]

        async def hung_up() -> float | None:
            return first.hung_up_at

        cut_after = await wait_for(hung_up, "tether closing the connection", 5) - first.accepted_at
    assert delivery["state"] == "pending"
    assert delivery["last_answer"].startswith("timed out")
    if mode == "stream":
        assert "HTTP 200 began, its answer did not end" in delivery["last_answer"]
        assert delivery["last_status"] == 200
    # Cut at the total bound, not at a read timeout it never reaches (the answer never pauses).
    assert cut_after < fast.webhook_timeout_s + 1.0, cut_after


async def test_a_huge_answer_is_read_only_up_to_the_cap(
    store: Store, client: httpx.AsyncClient, receiver: Receiver, fast: Settings
) -> None:
    receiver.mode = "huge"
    hook = await one_converged(store, client, receiver)
    async with sending(store, fast):
        [delivery] = await wait_for(all_delivered(client, hook, 1), "delivered")
    assert delivery["last_status"] == 200
    assert len(delivery["last_answer"]) <= ANSWER_BYTES + len("HTTP 200: ")
    assert receiver.sent_bytes < 8 * 1024 * 1024, "the sender hung up before the whole answer"


@pytest.mark.parametrize(("mode", "answer"), [("redirect", "not followed"), ("error", "500")])
async def test_a_redirect_or_an_error_is_a_failed_attempt_retried(
    mode: str,
    answer: str,
    store: Store,
    client: httpx.AsyncClient,
    receiver: Receiver,
    fast: Settings,
) -> None:
    receiver.mode = mode  # type: ignore[assignment]
    hook = await one_converged(store, client, receiver)
    async with sending(store, fast):

        async def retried() -> dict[str, Any] | None:
            """Two attempts answered in `mode`: `attempts` counts an attempt from its claim, so
            the delivery alone cannot tell that its second one got the failing answer too."""
            [d] = await deliveries(client, hook)
            answered = receiver.ids().count(d["message_id"])
            return d if d["attempts"] >= 2 and answered >= 2 else None

        delivery = await wait_for(retried, "a second attempt answered")
        receiver.mode = "ok"
        [done] = await wait_for(all_delivered(client, hook, 1), "delivered once it answers 200")
    assert answer in delivery["last_answer"]
    assert delivery["state"] == "pending"
    assert done["attempts"] >= 3
    if mode == "redirect":
        assert delivery["last_status"] == 302


async def test_a_delivery_not_made_in_time_is_given_up(
    store: Store, client: httpx.AsyncClient, receiver: Receiver, fast: Settings
) -> None:
    receiver.mode = "error"
    hook = await one_converged(store, client, receiver)
    await event(store, "shop", EventKind.CONVERGED, "Ready", "v1 is ready again")
    async with sending(store, fast.model_copy(update={"webhook_give_up_after_s": 1.0})):

        async def failed() -> list[dict[str, Any]] | None:
            found = await deliveries(client, hook)
            return found if all(d["state"] == "failed" for d in found) else None

        found = await wait_for(failed, "both deliveries given up")
    # The later one was tried only after the earlier one was given up: in order.
    later, earlier = found
    assert earlier["finished_at"] <= later["last_attempt_at"]
    assert all(d["next_attempt_at"] is None for d in found)


async def test_deleting_a_project_is_delivered_and_outlives_it(
    store: Store, client: httpx.AsyncClient, receiver: Receiver, fast: Settings
) -> None:
    hook = (await add_hook(client, receiver.url, ["deleted"]))["webhook"]["id"]
    await project(store, "shop")
    result = await store.destroy("shop", ALICE)
    assert await store.finish_deletion("shop", result.project.generation)
    async with sending(store, fast):
        [delivery] = await wait_for(all_delivered(client, hook, 1), "the deleted event sent")
    [request] = receiver.received
    assert request.payload["type"] == "deleted"
    assert request.payload["data"]["project"] == "shop"
    assert delivery["project"] == "shop"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"url": "ftp://hooks.example.com/x", "events": ["converged"]}, "http:// or https://"),
        ({"url": "https://me:pw@hooks.example.com/x", "events": ["converged"]}, "credentials"),
        ({"url": "https:///nohost", "events": ["converged"]}, "names no host"),
        ({"url": "https://h.example.com:99999/", "events": ["converged"]}, "invalid port"),
        ({"url": "https://h.example.com/a b", "events": ["converged"]}, "spaces"),
        ({"url": "https://h.example.com/", "events": ["deployed"]}, "choose from converged"),
        ({"url": "https://h.example.com/", "events": []}, "at least 1"),
    ],
)
async def test_a_bad_hook_is_refused_saying_what_to_do(
    body: dict[str, Any], says: str, client: httpx.AsyncClient
) -> None:
    answer = await client.post("/v1/webhooks", json=body)
    assert answer.status_code == 422, answer.text
    assert says in answer.text
    assert (await client.get("/v1/webhooks")).json() == []


async def test_the_secret_is_shown_once_and_query_values_masked(
    client: httpx.AsyncClient,
) -> None:
    created = await add_hook(client, "https://h.example.com/in?token=s3cr3t&x=1", ["stalled"])
    assert created["webhook"]["url"] == "https://h.example.com/in?token=****&x=****"
    listed = (await client.get("/v1/webhooks")).text
    assert created["secret"] not in listed
    assert "s3cr3t" not in listed


async def test_owners_see_and_hear_only_their_own_and_an_admin_everything(
    store: Store,
    api_url: str,
    tokens: Any,
    receiver: Receiver,
    fast: Settings,
) -> None:
    def as_(token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    async with as_(tokens.alice) as alice, as_(tokens.bob) as bob, as_(tokens.admin) as admin:
        alices = (await add_hook(alice, receiver.url + "?who=alice", ["converged"]))["webhook"]
        everyone = (await add_hook(admin, receiver.url + "?who=admin", ["converged"]))["webhook"]
        assert everyone["all_owners"]
        assert not alices["all_owners"]
        await project(store, "shop", ALICE)
        await project(store, "blog", BOB)
        await event(store, "shop", EventKind.CONVERGED, "Ready", "shop ready")
        await event(store, "blog", EventKind.CONVERGED, "Ready", "blog ready")

        assert [h["id"] for h in (await bob.get("/v1/webhooks")).json()] == []
        assert {h["id"] for h in (await admin.get("/v1/webhooks")).json()} == {
            alices["id"],
            everyone["id"],
        }
        for path in (f"/v1/webhooks/{alices['id']}/deliveries",):
            assert (await bob.get(path)).status_code == 404
        refused = await bob.delete(f"/v1/webhooks/{alices['id']}")
        assert refused.status_code == 404
        assert "no webhook" in refused.json()["message"]

        async with sending(store, fast):
            await wait_for(all_delivered(alice, alices["id"], 1), "alice's hook: shop only")
            await wait_for(all_delivered(admin, everyone["id"], 2), "the admin's: both")
        heard = {
            (r.payload["data"]["project"], r.headers.get("webhook-id")) for r in receiver.received
        }
        assert len(heard) == 3
        alice_heard = [d["project"] for d in await deliveries(alice, alices["id"])]
        assert alice_heard == ["shop"]

        removed = await alice.delete(f"/v1/webhooks/{alices['id']}")
        assert removed.status_code == 200
        assert (await alice.get("/v1/webhooks")).json() == []


async def test_a_postgres_outage_resumes_where_it_stopped(
    store: Store,
    database_url: str,
    port_range: PortRange,
    client: httpx.AsyncClient,
    receiver: Receiver,
    fast: Settings,
) -> None:
    """The sender reaches Postgres through a proxy that goes away (connections reset, new ones
    refused) and comes back: what was written meanwhile (its NOTIFYs lost) is delivered once the
    listener is back, in order."""
    url = urlsplit(database_url)
    assert url.hostname is not None
    assert url.port is not None
    postgres = TcpProxy(url.hostname, url.port)
    await postgres.start()
    netloc = url.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{postgres.port}"
    through = await Store.connect(urlunsplit(url._replace(netloc=netloc)), port_range)
    hook = await one_converged(store, client, receiver)
    try:
        with structlog.testing.capture_logs() as logged:
            async with sending(through, fast):
                await wait_for(all_delivered(client, hook, 1), "the first, before the outage")
                await postgres.close()
                for i in range(3):
                    await event(store, "shop", EventKind.CONVERGED, "Ready", f"during {i}")

                async def failing() -> bool:
                    return any(
                        e["event"] == "webhook listener failed: reconnecting" for e in logged
                    )

                await wait_for(failing, "the sender finding Postgres gone")
                assert len(receiver.received) == 1
                await postgres.start(postgres.port)
                await wait_for(all_delivered(client, hook, 4), "all four after the outage")
    finally:
        await through.close()
        await postgres.close()
    arrived = [r.payload["data"]["message"] for r in receiver.received]
    assert list(dict.fromkeys(arrived)) == ["v1 is ready", "during 0", "during 1", "during 2"]


async def test_finished_deliveries_are_pruned_after_the_keep_time(
    store: Store, database_url: str, client: httpx.AsyncClient, receiver: Receiver, fast: Settings
) -> None:
    hook = await one_converged(store, client, receiver)
    async with sending(store, fast):
        await wait_for(all_delivered(client, hook, 1), "delivered")
    await event(store, "shop", EventKind.CONVERGED, "Ready", "still pending")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE webhook_deliveries SET finished_at = now() - interval '2 hours' "
            "WHERE state = 'delivered'"
        )
    finally:
        await conn.close()
    receiver.mode = "error"  # the pending one stays pending
    async with sending(store, fast.model_copy(update={"webhook_keep_s": 3600.0})):

        async def pruned() -> list[dict[str, Any]] | None:
            found = await deliveries(client, hook)
            return found if len(found) == 1 else None

        [left] = await wait_for(pruned, "the old delivered one pruned")
    assert left["state"] == "pending"


@pytest.mark.parametrize("url", ["http://[zz]/", "http://127.0.0.1:99999/"])
async def test_a_url_only_psql_could_store_fails_its_attempts_and_stops_nothing_else(
    url: str,
    store: Store,
    database_url: str,
    client: httpx.AsyncClient,
    receiver: Receiver,
    fast: Settings,
) -> None:
    """The API refuses such a URL; one written with psql is a failed attempt, not a crash."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO webhooks (owner, scope, url, events, secret) "
            "VALUES ('alice', 'alice', $1, '{converged}', 'whsec_AAAA')",
            url,
        )
    finally:
        await conn.close()
    hook = await one_converged(store, client, receiver)
    async with sending(store, fast):
        await wait_for(all_delivered(client, hook, 1), "the good hook's delivery")

        async def failed_attempt() -> dict[str, Any] | None:
            [d] = await deliveries(client, 1)
            return d if d["attempts"] >= 1 and d["last_answer"] else None

        bad = await wait_for(failed_attempt, "the bad hook's attempt recorded")
    assert bad["state"] == "pending"
    assert bad["last_answer"].startswith("no answer: ")
