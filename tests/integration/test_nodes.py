"""The swarm runtime's nodes as the operator records them: each resync's list replaces the last
(a node no longer listed is gone), a write under an epoch that does not hold the lease is refused
with nothing changed, and `GET /v1/nodes` shows them to any token, and to nobody without one."""

from __future__ import annotations

import httpx
import pytest

from tether.api.errors import Fenced
from tether.api.models import ClusterNode
from tether.api.store import Store


def node(name: str, state: str = "ready", availability: str = "active") -> ClusterNode:
    return ClusterNode(
        id=f"id-{name}",
        hostname=name,
        address=f"10.9.0.{name[-1]}",
        state=state,
        availability=availability,
        role="manager" if name == "node1" else "worker",
    )


async def test_each_list_replaces_the_last_and_the_api_shows_it(
    store: Store, client: httpx.AsyncClient, api_url: str
) -> None:
    assert (await client.get("/v1/nodes")).json() == []  # the engine runtime: no nodes
    await store.write_nodes([node("node1", availability="drain"), node("node2"), node("node3")])
    await store.write_nodes([node("node1", availability="drain"), node("node2", "down")])
    answer = await client.get("/v1/nodes")
    assert answer.status_code == 200, answer.text
    shown = {n["hostname"]: (n["state"], n["availability"], n["role"]) for n in answer.json()}
    assert shown == {"node1": ("ready", "drain", "manager"), "node2": ("down", "active", "worker")}
    assert all(n["seen_at"] for n in answer.json())
    async with httpx.AsyncClient(base_url=api_url) as nobody:
        assert (await nobody.get("/v1/nodes")).status_code == 401


async def test_a_write_under_a_stale_epoch_changes_nothing(store: Store) -> None:
    await store.write_nodes([node("node1")])
    with pytest.raises(Fenced):
        await store.write_nodes([node("node2")], epoch=7)  # no operator holds epoch 7
    assert [n.hostname for n in await store.nodes()] == ["node1"]
