"""The one reconnect loop (`tether.api.reconnect`): when it tries again, how long it waits, when
the delay starts over, and when it gives up. Pure: tiny delays, no Postgres, no Docker."""

from __future__ import annotations

import random

import pytest

from tether.api.reconnect import Backoff, GaveUp, Reconnect

FAST = Backoff(first_s=0.001, max_s=0.004, jitter=0.0)


class Lost(Exception):
    pass


class Fatal(Exception):
    pass


async def test_forever_retries_ends_and_listed_failures_with_a_doubling_capped_delay() -> None:
    seen: list[tuple[str | None, float]] = []
    calls = 0

    async def once() -> None:
        nonlocal calls
        calls += 1
        if calls == 6:
            raise Fatal("not listed: ends the loop")
        if calls % 2:
            raise Lost("connection refused")
        # an even call returns: the connection ended, which is retried too

    loop = Reconnect(
        "listener",
        retry_on=(Lost,),
        backoff=FAST,
        on_failure=lambda failure, delay: seen.append((failure and str(failure), delay)),
    )
    with pytest.raises(Fatal):
        await loop.forever(once)
    assert [what for what, _ in seen] == ["connection refused", None] * 2 + ["connection refused"]
    assert [round(delay, 4) for _, delay in seen] == [0.001, 0.002, 0.004, 0.004, 0.004]


async def test_connected_starts_the_delay_over() -> None:
    delays: list[float] = []
    calls = 0
    loop = Reconnect(
        "stream",
        retry_on=(Lost,),
        backoff=FAST,
        on_failure=lambda _failure, delay: delays.append(round(delay, 4)),
    )

    async def once() -> str:
        nonlocal calls
        calls += 1
        if calls == 3:
            loop.connected()
        if calls < 5:
            raise Lost
        return "done"

    assert await loop.until_done(once) == "done"
    assert delays == [0.001, 0.002, 0.001, 0.002]
    assert loop.connected_once


async def test_a_connection_that_stayed_up_long_starts_the_delay_over() -> None:
    delays: list[float] = []
    calls = 0
    loop = Reconnect(
        "events",
        retry_on=(Lost,),
        backoff=FAST,
        reset_after_s=0.0,  # every attempt counts as long
        on_failure=lambda _failure, delay: delays.append(round(delay, 4)),
    )

    async def once() -> None:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise Fatal
        raise Lost

    with pytest.raises(Fatal):
        await loop.forever(once)
    assert delays == [0.001, 0.001, 0.001]


async def test_a_predicate_decides_and_failing_too_long_gives_up() -> None:
    loop = Reconnect(
        "postgres",
        retry_on=lambda exc: isinstance(exc, Lost),
        backoff=FAST,
        give_up_after_s=0.0,  # the first wait would already be too long
        on_failure=lambda _failure, _delay: None,
    )

    async def refused() -> None:
        raise Lost("refused")

    with pytest.raises(GaveUp) as gave_up:
        await loop.until_done(refused)
    assert isinstance(gave_up.value.last, Lost)
    assert gave_up.value.what == "postgres"


def test_the_delay_is_jittered_within_its_bounds() -> None:
    backoff = Backoff(first_s=1.0, max_s=8.0, jitter=0.2)
    rng = random.Random(7)
    delays = [backoff.delay(n, rng) for n in (1, 2, 3, 4, 5) for _ in range(50)]
    for n, chunk in enumerate((delays[i : i + 50] for i in range(0, 250, 50)), start=1):
        base = min(2 ** (n - 1), 8.0)
        assert all(0.8 * base <= d <= 1.2 * base for d in chunk)
        assert len({round(d, 6) for d in chunk}) > 1
