"""The store's desired-state semantics on real Postgres: `generation` rises once per real change and
never for a no-op, a refused write or a status write; each change appends one `desired` event and
sends one NOTIFY on `tether_desired`, in the same transaction; concurrent writers neither lose nor
double-count a change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from support import wait_for

from tether.api.errors import (
    DeletionRequested,
    Fenced,
    NoDeployment,
    NotFound,
    PreconditionFailed,
)
from tether.api.models import (
    DeploymentSpec,
    DesiredState,
    Event,
    EventKind,
    Principal,
    Project,
    Status,
    WriteResult,
)
from tether.api.store import DESIRED_CHANNEL, STATUS_CHANNEL, PortRange, Store

ALICE = Principal(owner="alice")
BOB = Principal(owner="bob")
SHOP = "shop"
RUNNING, STOPPED = DesiredState.RUNNING, DesiredState.STOPPED


# Helpers


def image(tag: str = "v1") -> DeploymentSpec:
    return DeploymentSpec(image=f"busybox-httpd:{tag}", port=8080)


async def deploy(store: Store, tag: str, by: Principal = ALICE, **kw: Any) -> WriteResult:
    """Deploy busybox-httpd:TAG to the shop; the answer without the deployment itself."""
    result, _ = await store.deploy(SHOP, image(tag), by, **kw)
    return result


async def current(store: Store, name: str = SHOP) -> Project:
    return (await store.get_project(name, ALICE)).project


async def desired_events(store: Store, name: str = SHOP) -> list[Event]:
    return [e for e in await store.events(name, ALICE, limit=1000) if e.kind == EventKind.DESIRED]


async def snapshot(store: Store, name: str = SHOP) -> tuple[Any, ...]:
    """Everything a desired-state write may touch, to prove that a refused one touched nothing."""
    return (
        await current(store, name),
        await store.deployments(name, ALICE),
        await store.events(name, ALICE, limit=1000),
    )


async def deployed(store: Store, *tags: str, name: str = SHOP) -> Project:
    """A project of alice's with one deployment per tag, desired running."""
    await store.create_project(name, ALICE)
    for tag in tags:
        await store.deploy(name, image(tag), ALICE)
    return await current(store, name)


class Notifications:
    """What arrived on `tether_desired`, in commit order."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.markers = 0

    async def all_until_marker(self) -> list[str]:
        """Every notification since the last call. A new marker project is created last, and
        notifications arrive in the order their transactions committed, so once the marker's has
        arrived, every earlier one has too."""
        self.markers += 1
        marker = f"marker-{self.markers}"
        assert (await self.store.create_project(marker, BOB)).changed
        received: list[str] = []
        while not received or received[-1] != marker:
            received.append(await asyncio.wait_for(self.queue.get(), 10))
        return received[:-1]


@pytest.fixture
async def notifications(store: Store) -> AsyncIterator[Notifications]:
    listener = Notifications(store)
    async with store.listen(DESIRED_CHANNEL, listener.queue.put_nowait):
        yield listener


# Generation and events


async def test_create_starts_at_generation_1_with_one_event(store: Store) -> None:
    result = await store.create_project(SHOP, ALICE)
    assert result.changed is True
    assert result.project.generation == 1
    assert result.project.desired_state == STOPPED
    assert result.project.target_version is None
    assert [(e.generation, e.reason, e.actor) for e in await desired_events(store)] == [
        (1, "Created", "alice")
    ]
    again = await store.create_project(SHOP, ALICE)
    assert again.changed is False
    assert again.project == result.project
    assert len(await desired_events(store)) == 1


WRITES: dict[str, Callable[[Store], Awaitable[WriteResult]]] = {
    "deploy": lambda s: deploy(s, "v3"),
    "deploy without start": lambda s: deploy(s, "v3", start=False),
    "stop": lambda s: s.set_desired_state(SHOP, STOPPED, ALICE),
    "restart": lambda s: s.restart(SHOP, ALICE),
    "rollback": lambda s: s.rollback(SHOP, ALICE),
    "rollback to v1": lambda s: s.rollback(SHOP, ALICE, to_version=1),
    "destroy": lambda s: s.destroy(SHOP, ALICE),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
async def test_each_real_change_bumps_generation_once_with_one_event(
    store: Store, notifications: Notifications, write: Callable[[Store], Awaitable[WriteResult]]
) -> None:
    before = await deployed(store, "v1", "v2")
    events_before = await desired_events(store)
    await notifications.all_until_marker()

    result = await write(store)

    assert result.changed is True
    assert result.project.generation == before.generation + 1
    assert await current(store) == result.project
    events = await desired_events(store)
    assert events[: len(events_before)] == events_before
    [event] = events[len(events_before) :]
    assert (event.generation, event.actor) == (before.generation + 1, "alice")
    assert await notifications.all_until_marker() == [SHOP]


async def test_what_each_write_asks_for(store: Store) -> None:
    await store.create_project(SHOP, ALICE)
    result, v1 = await store.deploy(SHOP, image("v1"), ALICE, start=False)
    assert (v1.version, v1.image, v1.created_by) == (1, "busybox-httpd:v1", "alice")
    assert (result.project.desired_state, result.project.target_version) == (STOPPED, 1)

    result, v2 = await store.deploy(SHOP, image("v2"), ALICE)
    assert (result.project.desired_state, result.project.target_version) == (RUNNING, 2)
    assert v2.version == 2

    result, _ = await store.deploy(SHOP, image("v3"), ALICE, start=False)  # keeps it running
    assert (result.project.desired_state, result.project.target_version) == (RUNNING, 3)

    result = await store.set_desired_state(SHOP, STOPPED, ALICE)
    assert result.project.desired_state == STOPPED

    result = await store.restart(SHOP, ALICE)  # a restart of a stopped project starts it
    assert (result.project.desired_state, result.project.restart_token) == (RUNNING, 1)
    result = await store.restart(SHOP, ALICE)
    assert result.project.restart_token == 2

    result = await store.rollback(SHOP, ALICE)  # the one before the target, v2
    assert result.project.target_version == 2
    result = await store.rollback(SHOP, ALICE)
    assert result.project.target_version == 1
    result = await store.rollback(SHOP, ALICE, to_version=3)  # "rolling back" forward is allowed
    assert result.project.target_version == 3
    assert result.project.desired_state == RUNNING  # rollback leaves the desired state alone

    result = await store.destroy(SHOP, ALICE)
    assert result.project.deletion_requested is True
    assert (result.project.desired_state, result.project.target_version) == (RUNNING, 3)
    assert result.project.generation == 11
    assert [e.generation for e in await desired_events(store)] == list(range(1, 12))


NO_OPS: dict[str, Callable[[Store], Awaitable[WriteResult]]] = {
    "start when running": lambda s: s.set_desired_state(SHOP, RUNNING, ALICE),
    "rollback to the target": lambda s: s.rollback(SHOP, ALICE, to_version=2),
    "start with a matching If-Match": lambda s: s.set_desired_state(
        SHOP, RUNNING, ALICE, if_match=3
    ),
}


@pytest.mark.parametrize("write", NO_OPS.values(), ids=NO_OPS.keys())
async def test_no_op_leaves_no_trace(
    store: Store, notifications: Notifications, write: Callable[[Store], Awaitable[WriteResult]]
) -> None:
    await deployed(store, "v1", "v2")
    before = await snapshot(store)
    await notifications.all_until_marker()

    result = await write(store)

    assert result.changed is False
    assert "already" in result.message
    assert result.project == before[0]
    assert await snapshot(store) == before
    assert await notifications.all_until_marker() == []


async def test_stop_twice_and_destroy_twice_are_no_ops(
    store: Store, notifications: Notifications
) -> None:
    await deployed(store, "v1")
    await store.set_desired_state(SHOP, STOPPED, ALICE)
    before = await snapshot(store)
    await notifications.all_until_marker()
    result = await store.set_desired_state(SHOP, STOPPED, ALICE)
    assert (result.changed, result.message) == (
        False,
        "already desired stopped; tether is keeping it stopped",
    )
    assert await snapshot(store) == before

    await store.destroy(SHOP, ALICE)
    before = await snapshot(store)
    assert await notifications.all_until_marker() == [SHOP]
    result = await store.destroy(SHOP, ALICE)
    assert (result.changed, result.message) == (False, "deletion already requested")
    assert await snapshot(store) == before
    assert await notifications.all_until_marker() == []


REFUSED: dict[str, tuple[Callable[[Store], Awaitable[Any]], type[Exception]]] = {
    "stale If-Match on start": (
        lambda s: s.set_desired_state(SHOP, RUNNING, ALICE, if_match=2),
        PreconditionFailed,
    ),
    "stale If-Match on a would-be no-op": (
        lambda s: s.set_desired_state(SHOP, STOPPED, ALICE, if_match=2),
        PreconditionFailed,
    ),
    "future If-Match on restart": (
        lambda s: s.restart(SHOP, ALICE, if_match=9),
        PreconditionFailed,
    ),
    "stale If-Match on deploy": (
        lambda s: deploy(s, "v9", if_match=1),
        PreconditionFailed,
    ),
    "stale If-Match on rollback": (
        lambda s: s.rollback(SHOP, ALICE, if_match=1),
        PreconditionFailed,
    ),
    "stale If-Match on destroy": (lambda s: s.destroy(SHOP, ALICE, if_match=1), PreconditionFailed),
    "rollback to an unknown version": (
        lambda s: s.rollback(SHOP, ALICE, to_version=9),
        NotFound,
    ),
    "another owner's start": (lambda s: s.set_desired_state(SHOP, RUNNING, BOB), NotFound),
    "another owner's deploy": (lambda s: deploy(s, "v9", BOB), NotFound),
    "another owner's destroy": (lambda s: s.destroy(SHOP, BOB), NotFound),
}


@pytest.mark.parametrize(("write", "error"), REFUSED.values(), ids=REFUSED.keys())
async def test_refused_write_changes_nothing(
    store: Store,
    notifications: Notifications,
    write: Callable[[Store], Awaitable[Any]],
    error: type[Exception],
) -> None:
    await deployed(store, "v1", "v2")
    await store.set_desired_state(SHOP, STOPPED, ALICE)  # generation 4
    before = await snapshot(store)
    await notifications.all_until_marker()

    with pytest.raises(error):
        await write(store)

    assert await snapshot(store) == before
    assert await notifications.all_until_marker() == []


async def test_precondition_message_names_both_generations(store: Store) -> None:
    await deployed(store, "v1")
    with pytest.raises(PreconditionFailed) as refused:
        await store.set_desired_state(SHOP, STOPPED, ALICE, if_match=1)
    assert refused.value.message == (
        "project 'shop' is at generation 2, not 1; nothing was changed"
    )
    assert refused.value.hint


async def test_start_restart_and_rollback_need_a_deployment(
    store: Store, notifications: Notifications
) -> None:
    await store.create_project(SHOP, ALICE)
    before = await snapshot(store)
    await notifications.all_until_marker()
    for write in [
        store.set_desired_state(SHOP, RUNNING, ALICE),
        store.restart(SHOP, ALICE),
        store.rollback(SHOP, ALICE),
    ]:
        with pytest.raises(NoDeployment) as refused:
            await write
        assert refused.value.hint == "run `tether deploy shop --image IMAGE` first"
    assert await snapshot(store) == before
    assert await notifications.all_until_marker() == []


async def test_rollback_with_nothing_earlier_is_refused(store: Store) -> None:
    await deployed(store, "v1")
    before = await snapshot(store)
    with pytest.raises(NoDeployment) as refused:
        await store.rollback(SHOP, ALICE)
    assert "nothing earlier" in refused.value.message
    assert refused.value.hint
    assert "tether deploy shop" in refused.value.hint
    assert await snapshot(store) == before


async def test_rollback_from_the_first_version_does_not_claim_it_is_the_only_one(
    store: Store,
) -> None:
    await deployed(store, "v1", "v2")
    await store.rollback(SHOP, ALICE)  # now targeting v1, with v2 still there
    with pytest.raises(NoDeployment) as refused:
        await store.rollback(SHOP, ALICE)
    assert "only v1" not in refused.value.message
    assert "nothing earlier" in refused.value.message
    assert refused.value.hint
    assert "--to" in refused.value.hint


async def test_status_writes_never_touch_the_desired_state(
    store: Store, notifications: Notifications
) -> None:
    await deployed(store, "v1")
    before = await current(store)
    desired_before = await desired_events(store)
    await notifications.all_until_marker()
    status_notes: asyncio.Queue[str] = asyncio.Queue()
    async with store.listen("tether_status", status_notes.put_nowait):
        await store.write_status(
            Status(project=SHOP, observed_generation=2, phase="Running", running_version=1),
            [(EventKind.ACTION, "Started", "container started")],
            actor="operator",
        )
        assert await asyncio.wait_for(status_notes.get(), 10) == SHOP
    assert await current(store) == before
    assert await desired_events(store) == desired_before
    view = await store.get_project(SHOP, ALICE)
    assert view.status is not None
    assert (view.status.observed_generation, view.status.phase) == (2, "Running")
    [action] = [e for e in await store.events(SHOP, ALICE) if e.kind == EventKind.ACTION]
    assert (action.reason, action.actor, action.generation) == ("Started", "operator", 2)
    assert await notifications.all_until_marker() == []


async def test_a_status_write_is_one_statement_with_its_events_and_notification(
    database_url: str, port_range: PortRange
) -> None:
    statements: list[str] = []
    store = await Store.connect(database_url, port_range, on_statement=statements.append)
    try:
        await deployed(store, "v1")
        status_notes: asyncio.Queue[str] = asyncio.Queue()
        async with store.listen(STATUS_CHANNEL, status_notes.put_nowait):
            statements.clear()  # the setup's, logged by now: connecting took event loop turns
            events = [
                (EventKind.ACTION, "create v1", "creating shop-v1"),
                (EventKind.ACTION, "start v1", "starting shop-v1"),
                (EventKind.CONVERGED, "Ready", "v1 is ready"),
            ]
            await store.write_status(
                Status(project=SHOP, observed_generation=2, phase="Running"),
                events,
                actor="operator",
            )
            assert await asyncio.wait_for(status_notes.get(), 10) == SHOP
            assert len(statements) == 1, statements  # one round trip, whatever the events
        written = [e for e in await store.events(SHOP, ALICE) if e.actor == "operator"]
        assert [(e.kind, e.reason, e.message) for e in written] == events  # in their order
        assert {e.generation for e in written} == {2}
    finally:
        await store.close()


async def test_a_start_or_stop_is_one_statement_with_its_event_and_notification(
    database_url: str, port_range: PortRange
) -> None:
    statements: list[str] = []
    store = await Store.connect(database_url, port_range, on_statement=statements.append)
    try:
        first = (await deployed(store, "v1")).generation
        woken: asyncio.Queue[str] = asyncio.Queue()
        async with store.listen(DESIRED_CHANNEL, woken.put_nowait):
            for state in (STOPPED, RUNNING):
                # What ran before is logged by now: connecting, or waiting for the last
                # notification, took turns of the event loop (asyncpg logs on the next one).
                statements.clear()
                result = await store.set_desired_state(SHOP, state, ALICE)
                assert await asyncio.wait_for(woken.get(), 10) == SHOP
                assert len(statements) == 1, statements  # one round trip
                assert result.changed
        assert result.project.generation == first + 2
        events = (await desired_events(store))[-2:]
        assert [(e.reason, e.generation) for e in events] == [
            ("Stop", first + 1),
            ("Start", first + 2),
        ]
    finally:
        await store.close()


# Destroy


async def test_after_destroy_every_write_is_refused(
    store: Store, notifications: Notifications
) -> None:
    await deployed(store, "v1", "v2")
    await notifications.all_until_marker()
    result = await store.destroy(SHOP, ALICE)
    assert result.project.deletion_requested is True
    before = await snapshot(store)
    assert await notifications.all_until_marker() == [SHOP]
    for write in [
        store.set_desired_state(SHOP, RUNNING, ALICE),
        store.set_desired_state(SHOP, STOPPED, ALICE),
        store.restart(SHOP, ALICE),
        store.rollback(SHOP, ALICE),
        store.deploy(SHOP, image("v3"), ALICE),
    ]:
        with pytest.raises(DeletionRequested) as refused:
            await write
        assert refused.value.message == "project 'shop' is being destroyed"
        assert refused.value.hint
    assert await snapshot(store) == before
    assert await notifications.all_until_marker() == []


async def test_finish_deletion_only_at_the_generation_the_operator_finished(
    store: Store,
) -> None:
    await deployed(store, "v1")
    assert await store.finish_deletion(SHOP, 2) is False  # not asked for: nothing happens
    destroyed = (await store.destroy(SHOP, ALICE)).project
    assert await store.finish_deletion(SHOP, destroyed.generation - 1) is False
    assert (await current(store)).deletion_requested is True
    assert await store.finish_deletion(SHOP, destroyed.generation) is True
    with pytest.raises(NotFound):
        await store.get_project(SHOP, ALICE)
    assert await store.desired(SHOP) is None
    created = await store.create_project(SHOP, BOB)  # the name is free again
    assert (created.changed, created.project.generation) == (True, 1)


# Concurrency


async def test_concurrent_writes_with_the_same_if_match_let_exactly_one_through(
    store: Store,
) -> None:
    project = await deployed(store, "v1")
    events_before = len(await desired_events(store))

    async def attempt(i: int) -> WriteResult | PreconditionFailed:
        try:
            if i % 2:
                return await store.set_desired_state(
                    SHOP, STOPPED, ALICE, if_match=project.generation
                )
            return await store.restart(SHOP, ALICE, if_match=project.generation)
        except PreconditionFailed as refused:
            return refused

    outcomes = await asyncio.gather(*(attempt(i) for i in range(20)))

    winners = [o for o in outcomes if isinstance(o, WriteResult)]
    assert len(winners) == 1, outcomes
    assert winners[0].changed is True
    assert sum(isinstance(o, PreconditionFailed) for o in outcomes) == 19
    assert await current(store) == winners[0].project
    assert winners[0].project.generation == project.generation + 1
    assert len(await desired_events(store)) == events_before + 1


async def test_concurrent_restarts_and_deploys_each_count_once(store: Store) -> None:
    project = await deployed(store, "v1")

    results = await asyncio.gather(
        *(store.restart(SHOP, ALICE) for _ in range(15)),
        *(deploy(store, f"c{i}", start=i % 2 == 0) for i in range(15)),
    )

    assert all(r.changed for r in results)
    generations = sorted(r.project.generation for r in results)
    assert generations == list(range(project.generation + 1, project.generation + 31))
    final = await current(store)
    assert final == max((r.project for r in results), key=lambda p: p.generation)
    assert final.restart_token == 15
    assert final.target_version == max(d.version for d in await store.deployments(SHOP, ALICE))
    assert [d.version for d in await store.deployments(SHOP, ALICE)] == list(range(1, 17))
    events = await desired_events(store)
    assert sorted(e.generation for e in events[2:]) == generations


async def test_concurrent_creates_of_one_name_make_one_project(store: Store) -> None:
    results = await asyncio.gather(*(store.create_project(SHOP, ALICE) for _ in range(10)))
    assert sum(r.changed for r in results) == 1
    assert {r.project.model_dump_json() for r in results} == {
        (await current(store)).model_dump_json()
    }
    assert len(await desired_events(store)) == 1


async def test_concurrent_creates_of_many_projects_all_get_a_port(store: Store) -> None:
    names = [f"p{i}" for i in range(20)]
    results = await asyncio.gather(*(store.create_project(n, ALICE) for n in names))
    assert all(r.changed for r in results)
    ports = {r.project.host_port for r in results}
    assert len(ports) == len(names)


# The operator lease: epochs fence every operator write


async def test_each_acquisition_has_a_new_epoch_and_older_epochs_are_fenced(store: Store) -> None:
    await deployed(store, "v1")
    first = await store.lease_session("first", lock_wait_s=0.2)
    second = await store.lease_session("second", lock_wait_s=0.2)
    try:
        assert await first.wait_lock(5)
        old = await first.acquire(10, 5)
        assert not await second.wait_lock(5)  # held: the wait times out
        written = Status(project=SHOP, observed_generation=2, phase="Running")
        await store.write_status(written, [(EventKind.ACTION, "Started", "x")], "op", epoch=old)
        await first.close()  # as when its process dies: the lock goes with the session
        assert await second.wait_lock(5)
        new = await second.acquire(10, 5)
        assert new == old + 1
        events_before = await store.events(SHOP, ALICE)
        stale = Status(project=SHOP, observed_generation=2, phase="Stalled")
        with pytest.raises(Fenced) as refused:
            await store.write_status(stale, [(EventKind.ACTION, "Stale", "y")], "op", epoch=old)
        assert (refused.value.epoch, refused.value.current) == (old, new)
        view = await store.get_project(SHOP, ALICE)
        assert view.status is not None
        assert view.status.phase == "Running"  # nothing of the stale write landed
        assert await store.events(SHOP, ALICE) == events_before
        with pytest.raises(Fenced):
            await store.finish_deletion(SHOP, 2, epoch=old)
        assert not await second.renew(old, 10, 5)  # nor may an old epoch renew
        assert await second.renew(new, 10, 5)
        lease = await store.lease()
        assert lease is not None
        assert (lease.holder, lease.epoch, lease.live) == ("second", new, True)
        await second.release(new, 5)
        lease = await store.lease()
        assert lease is not None
        assert (lease.epoch, lease.live) == (new, False)  # ended, and the epoch stays
    finally:
        await first.close()
        await second.close()


async def test_an_expired_holder_that_keeps_its_session_is_ended_by_a_standby(
    store: Store,
) -> None:
    """A holder that hangs (or was cut off) keeps its session and its lock: once its lease has
    expired on the DB clock, a standby ends that session and gets the lock; before, it cannot."""
    hung = await store.lease_session("hung", lock_wait_s=0.2)
    standby = await store.lease_session("standby", lock_wait_s=0.2)
    try:
        assert await hung.wait_lock(5)
        await hung.acquire(1, 5)
        assert not await standby.end_stale(5)  # not expired yet: left alone
        assert not await standby.wait_lock(5)

        async def taken_over() -> bool:
            await standby.end_stale(5)
            return await standby.wait_lock(5)

        await wait_for(taken_over, "the standby to end the expired holder's session")

        async def hung_session_ended() -> bool:
            return hung.closed.is_set()

        await wait_for(hung_session_ended, "the hung holder's session to end")
    finally:
        await hung.close()
        await standby.close()
