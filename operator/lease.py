"""The operator lease: which of several operators on one database is active, and for how long it
may still act.

- **Death**: the active operator's lease connection holds a session-level advisory lock; each
  standby waits for that lock on its own lease connection. When the active process dies, Postgres
  ends its session and the first standby in line gets the lock at once (no polling).
- **Hang or cut**: the lease row also has an expiry on the DB clock, renewed every TTL/3. A standby
  whose wait for the lock times out (every `lock_wait_s`) ends the session of a holder whose
  lease has expired (`pg_terminate_backend` of its recorded backend), and so gets the lock.
- **Fencing**: each acquisition increments the lease's epoch. Every operator write carries it and
  the database refuses it once a newer epoch exists. Before every runtime call the operator checks
  `holds()`: a deadline on the monotonic clock, counted from before the statement that set the DB's
  expiry, minus a margin, so it always ends before the expiry a standby waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Literal

import structlog

from tether.api.errors import StoreUnavailable
from tether.api.store import LeaseSession, Store
from tether.operator.metrics import LEASE_EPOCH, OPERATOR_ACTIVE
from tether.operator.runtime import LostLease

log = structlog.get_logger("tether.operator.lease")
STATEMENT_TIMEOUT_S = 5.0
RECONNECT_DELAY_S = (0.2, 5.0)
RENEW_RETRY_S = 0.5

# Why a tenure ended.
LossReason = Literal["taken", "expired", "connection_lost", "fenced"]


class Lease:
    def __init__(self, store: Store, holder: str, ttl_s: float) -> None:
        self._store = store
        self.holder = holder
        self.ttl_s = ttl_s
        self.renew_every_s = ttl_s / 3
        # A standby looks for an expired holder this often (between lock waits).
        self.lock_wait_s = min(2.0, ttl_s / 4)
        # The local deadline ends this long before the DB's expiry: room for the clocks' rates
        # and for a request to reach Docker after the check.
        self.margin_s = max(0.5, ttl_s / 10)
        self.epoch: int | None = None
        self._deadline = 0.0
        self._session: LeaseSession | None = None
        self._dropped = asyncio.Event()
        self._forever = False
        self._talk = asyncio.Lock()  # one statement at a time on the lease connection
        self._rng = random.Random()
        OPERATOR_ACTIVE.set_function(lambda: 1.0 if self.holds() else 0.0)

    def holds(self) -> bool:
        """Whether this operator may act now."""
        if self._forever:
            return True
        session = self._session
        return (
            session is not None
            and not session.closed.is_set()
            and time.monotonic() < self._deadline
        )

    def check(self) -> None:
        """The guard before every runtime call: raise LostLease unless this operator may act."""
        if not self.holds():
            raise LostLease(f"{self.holder} does not hold the operator lease (epoch {self.epoch})")

    @property
    def deadline(self) -> float:
        """Until when (time.monotonic()) this operator may act, if it holds the lease."""
        return self._deadline

    def fencing_token(self) -> int | None:
        """The epoch every write of this operator carries: the last one acquired (0 before any,
        which the database refuses). None only when `assume_held`: unfenced."""
        return None if self._forever else (self.epoch or 0)

    def assume_held(self) -> None:
        """For passes run by hand (tests): act as if the lease were held for good, unfenced."""
        self._forever = True

    def drop(self) -> None:
        """The database refused a write of this epoch (fenced): act no more, now."""
        self._deadline = 0.0
        self._dropped.set()

    async def acquire(self) -> int:
        """Wait as a standby until this operator holds the lease; return its epoch."""
        delay = RECONNECT_DELAY_S[0]
        while True:
            try:
                if self._session is None or self._session.closed.is_set():
                    await self._close()
                    self._session = await self._store.lease_session(
                        self.holder, lock_wait_s=self.lock_wait_s
                    )
                session = self._session
                if await session.wait_lock(self.lock_wait_s + STATEMENT_TIMEOUT_S):
                    asked = time.monotonic()
                    epoch = await session.acquire(self.ttl_s, STATEMENT_TIMEOUT_S)
                    self._deadline = asked + self.ttl_s - self.margin_s
                    self.epoch = epoch
                    self._dropped.clear()
                    LEASE_EPOCH.set(epoch)
                    return epoch
                if await session.end_stale(STATEMENT_TIMEOUT_S):
                    log.warning(
                        "ended the session of an operator whose lease expired",
                        holder=self.holder,
                    )
                delay = RECONNECT_DELAY_S[0]
            except StoreUnavailable as exc:
                log.warning("lease connection failed", holder=self.holder, error=str(exc))
                await self._close()
                await asyncio.sleep(delay * self._rng.uniform(0.8, 1.2))
                delay = min(delay * 2, RECONNECT_DELAY_S[1])

    async def keep(self) -> LossReason:
        """Renew the lease until it is lost; return why, with the lease connection closed (its
        lock released, if Postgres still sees the session). Cancelled, it leaves the lease as
        it is, for `release`."""
        reason = await self._renew_until_lost()
        self._deadline = 0.0
        await self._close()
        return reason

    async def _renew_until_lost(self) -> LossReason:
        session, epoch = self._session, self.epoch
        assert session is not None
        assert epoch is not None
        next_renewal = time.monotonic() + self.renew_every_s
        while True:
            reason = await self._wait_until(session, next_renewal)
            if reason is not None:
                return reason
            asked = time.monotonic()
            left = self._deadline - asked
            if left <= 0:
                return "expired"
            try:
                async with self._talk:
                    renewed = await session.renew(epoch, self.ttl_s, min(left, STATEMENT_TIMEOUT_S))
            except StoreUnavailable as exc:
                log.warning("lease renewal failed", holder=self.holder, error=str(exc))
                next_renewal = time.monotonic() + RENEW_RETRY_S
                continue
            if not renewed:
                return "taken"
            if self._deadline > 0:  # not dropped meanwhile
                self._deadline = asked + self.ttl_s - self.margin_s
            next_renewal = asked + self.renew_every_s

    async def _wait_until(self, session: LeaseSession, when: float) -> LossReason | None:
        """Sleep until `when`; a reason if the lease is lost first."""
        closed = asyncio.create_task(session.closed.wait())
        dropped = asyncio.create_task(self._dropped.wait())
        try:
            timeout = max(0.0, min(when, self._deadline) - time.monotonic())
            await asyncio.wait([closed, dropped], timeout=timeout)
        finally:
            closed.cancel()
            dropped.cancel()
        if self._dropped.is_set():
            return "fenced"
        if session.closed.is_set():
            return "connection_lost"
        if time.monotonic() >= self._deadline:
            return "expired"
        return None

    async def release(self) -> None:
        """Hand over: end the lease now (if still held) and unlock, so that a waiting standby
        takes over at once; close the lease connection either way."""
        session, epoch = self._session, self.epoch
        try:
            if session is not None and epoch is not None and self.holds():
                self._deadline = 0.0
                with contextlib.suppress(StoreUnavailable):
                    async with self._talk:
                        await session.release(epoch, STATEMENT_TIMEOUT_S)
                    log.info("lease released", holder=self.holder, epoch=epoch)
        finally:
            self._deadline = 0.0
            await self._close()

    async def _close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
