"""The work queue: one entry per project, one pass per project at a time, backoff that only a
desired change can cut short."""

from __future__ import annotations

import asyncio
import time

from tether.operator.queue import WorkQueue


async def drain_ready(queue: WorkQueue) -> list[str]:
    """Every name ready right now, in order (each marked active until `done`)."""
    names = []
    while len(queue):
        names.append(await queue.get())
    return names


async def test_a_project_is_queued_at_most_once() -> None:
    queue = WorkQueue()
    for name in ["a", "b", "a", "a", "b", "c"]:
        queue.add(name)
    assert await drain_ready(queue) == ["a", "b", "c"]
    queue.close()


async def test_a_project_changed_during_its_pass_runs_again_afterwards_not_during() -> None:
    queue = WorkQueue()
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")  # dirtied while in progress
    assert len(queue) == 0, "never queued while its pass runs"
    queue.done("a")
    assert await drain_ready(queue) == ["a"]
    queue.done("a")
    assert len(queue) == 0, "ran once more, and nothing is left queued"
    queue.add("a")  # no longer in progress: queued at once, not held back as dirty
    assert await drain_ready(queue) == ["a"]
    queue.close()


async def test_backoff_holds_ordinary_triggers_until_due() -> None:
    queue = WorkQueue()
    began = time.monotonic()
    queue.add_after("a", 0.3, backoff=True)
    queue.add("a")  # a Docker event or a resync: must not cut the backoff short
    assert len(queue) == 0
    async with asyncio.timeout(5):
        assert await queue.get() == "a"
    assert time.monotonic() - began >= 0.29
    queue.close()


async def test_a_desired_change_cuts_backoff_short() -> None:
    queue = WorkQueue()
    queue.add_after("a", 60, backoff=True)
    queue.add("a", urgent=True)
    assert await drain_ready(queue) == ["a"]
    queue.close()


async def test_the_earliest_timer_wins() -> None:
    queue = WorkQueue()
    queue.add_after("a", 60)
    queue.add_after("a", 0.05)
    async with asyncio.timeout(5):
        assert await queue.get() == "a"
    queue.close()


async def test_forget_drops_timers_and_backoff() -> None:
    queue = WorkQueue()
    queue.add_after("gone", 0.05, backoff=True)
    queue.forget("gone")
    queue.add_after("marker", 0.2)  # fires after "gone" would have
    async with asyncio.timeout(5):
        assert await queue.get() == "marker"
    assert len(queue) == 0, "the forgotten project's timer must not fire"
    queue.add("gone")  # and no backoff holds it any more
    assert await drain_ready(queue) == ["gone"]
    queue.close()


async def test_a_project_queued_first_goes_ahead_and_once() -> None:
    queue = WorkQueue()
    for name in ["a", "b", "c"]:
        queue.add(name)
    queue.add("c", first=True)  # a starting endpoint to look at again: a short pass
    queue.add("d", first=True)
    assert await drain_ready(queue) == ["c", "d", "a", "b"]
    for name in "abcd":
        queue.done(name)
    queue.add("c")
    assert await drain_ready(queue) == ["c"], "the entry it left behind does not run it twice"
    queue.close()
