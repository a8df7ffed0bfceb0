"""One way to keep a connection up: run it again when it ends or fails, after a growing delay.

Every loop of tether that reconnects uses it: the API's watch listener, the operator's NOTIFY
listener and Docker events stream, the CLI's event streams and `tether up`'s wait for Postgres.
Built on tenacity, which runs the attempts, sleeps and re-raises; what is tether's own is when the
delay starts over:

- the delay doubles from `first_s` up to `max_s`, each time scaled by a random factor within
  ±`jitter` (so that many clients cut off at once do not come back in step);
- it starts from `first_s` again once a connection is up: when the caller says so
  (`connected()`), or when an attempt has stayed up for `reset_after_s`;
- with `give_up_after_s`, the failure that would have the failing last longer than that is
  raised as `GaveUp` (failing counts from the first failure after the last connection);
- every failure is reported before the wait: logged as a warning, or handed to `on_failure`.

This is the lowest layer (`tether.api`): the operator and the CLI import it, it imports neither.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState

T = TypeVar("T")
log = structlog.get_logger("tether.reconnect")

# What was wrong (None: the connection just ended) and how long the wait before the next try is.
OnFailure = Callable[[BaseException | None, float], None]
RetryOn = tuple[type[BaseException], ...] | Callable[[BaseException], bool]


class GaveUp(Exception):
    """Failing went on for longer than `give_up_after_s`; `last` is the latest failure."""

    def __init__(self, what: str, after_s: float, last: BaseException) -> None:
        super().__init__(f"{what}: still failing after {after_s:g} s: {last}")
        self.what = what
        self.after_s = after_s
        self.last = last


class _Ended(Exception):
    """`once()` returned under `forever()`: the connection ended and is made again."""


@dataclass(frozen=True)
class Backoff:
    """Exponential delays with multiplicative jitter: first_s, 2 first_s, ... up to max_s."""

    first_s: float
    max_s: float
    jitter: float = 0.2

    def delay(self, failures: int, rng: random.Random) -> float:
        """The wait after the `failures`-th failure in a row (1 for the first)."""
        base = min(self.first_s * 2 ** max(failures - 1, 0), self.max_s)
        return float(base * rng.uniform(1 - self.jitter, 1 + self.jitter))


class Reconnect:
    """The reconnect loop of one connection (`what` names it in logs and errors).

    A trigger that must run for as long as its process does, e.g. the operator's NOTIFY listener:

        await Reconnect(
            "notify listener",
            retry_on=(StoreUnavailable, DockerFault, OSError),  # any other failure propagates
            backoff=Backoff(first_s=0.5, max_s=10.0),
            reset_after_s=30,
        ).forever(listen_once)

    A wait with a deadline: `until_done(once)` with `give_up_after_s`, which returns what `once`
    returns. `retry_on` may also be a predicate, for failures that are worth retrying only in some
    states (the CLI's streams: only once they had opened)."""

    def __init__(
        self,
        what: str,
        *,
        retry_on: RetryOn,
        backoff: Backoff,
        reset_after_s: float | None = None,
        give_up_after_s: float | None = None,
        on_failure: OnFailure | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.what = what
        self.backoff = backoff
        self.reset_after_s = reset_after_s
        self.give_up_after_s = give_up_after_s
        self._retry_on = retry_on
        self._on_failure = on_failure or self._log
        self._rng = rng or random.Random()
        self._failures = 0
        self._failing_since: float | None = None
        self.connected_once = False

    def connected(self) -> None:
        """The connection is up: the next failure waits `first_s` again, and failing starts over."""
        self.connected_once = True
        self._failures = 0
        self._failing_since = None

    async def until_done(self, once: Callable[[], Awaitable[T]]) -> T:
        """`once()` again after each failure it may retry, until it returns; its result."""
        retrying = AsyncRetrying(
            retry=self._retries,
            wait=self._wait,
            stop=self._stop,
            before_sleep=self._report,
            retry_error_callback=self._give_up,
            reraise=True,
        )
        result: T = await retrying(self._timed, once)
        return result

    async def forever(self, once: Callable[[], Awaitable[object]]) -> NoReturn:
        """`once()` again and again: its end (a connection lost) is retried like its failures."""

        async def ended() -> NoReturn:
            await once()
            raise _Ended

        await self.until_done(ended)
        raise AssertionError("unreachable: `ended` never returns")

    async def _timed(self, once: Callable[[], Awaitable[T]]) -> T:
        began = time.monotonic()
        try:
            return await once()
        finally:
            if self.reset_after_s is not None and time.monotonic() - began >= self.reset_after_s:
                self.connected()  # it stayed up long: whatever ended it is a fresh failure

    def _retries(self, state: RetryCallState) -> bool:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        if exc is None or not self._may_retry(exc):
            return False
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        return True

    def _may_retry(self, exc: BaseException) -> bool:
        if isinstance(exc, _Ended):
            return True
        if isinstance(self._retry_on, tuple):
            return isinstance(exc, self._retry_on)
        return self._retry_on(exc)

    def _wait(self, state: RetryCallState) -> float:
        return self.backoff.delay(self._failures, self._rng)

    def _stop(self, state: RetryCallState) -> bool:
        if self.give_up_after_s is None or self._failing_since is None:
            return False
        failing = time.monotonic() - self._failing_since
        return failing + (state.upcoming_sleep or 0.0) > self.give_up_after_s

    def _give_up(self, state: RetryCallState) -> Any:
        last = _failure(state)
        assert last is not None, "tenacity gives up after a failure only"
        raise GaveUp(self.what, self.give_up_after_s or 0.0, last) from last

    def _report(self, state: RetryCallState) -> None:
        failure = _failure(state)
        self._on_failure(None if isinstance(failure, _Ended) else failure, state.upcoming_sleep)

    def _log(self, failure: BaseException | None, delay_s: float) -> None:
        if failure is None:
            log.warning(f"{self.what} connection lost: reconnecting", delay_s=round(delay_s, 2))
        else:
            error = str(failure) or repr(failure)
            log.warning(f"{self.what} failed: reconnecting", error=error, delay_s=round(delay_s, 2))


def _failure(state: RetryCallState) -> BaseException | None:
    outcome = state.outcome
    return outcome.exception() if outcome is not None and outcome.failed else None
