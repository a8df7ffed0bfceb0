"""Revoked tokens refused at once by every API process: each listens on `tether_tokens`, where a
revocation is notified in the transaction that makes it, and drops the token from its cache.

The bound: a process that hears the notification refuses the token from then on (within
milliseconds of the revocation's commit). A process that does not hear it (its listener is down
and reconnecting: notifications sent meanwhile are lost) still trusts a token it had cached for at
most `TOKEN_TRUSTED_S` (5 s) after that token's last lookup, and drops its whole cache on every
(re)connect. So a revoked token is refused by every API process within `TOKEN_TRUSTED_S` in the
worst case, and at once in the usual one.
"""

from __future__ import annotations

import asyncio

import structlog

from tether.api.reconnect import Backoff, Reconnect
from tether.api.store import TOKEN_CHANNEL, Store

log = structlog.get_logger("tether.api.revocations")
LISTENER_NAME = "tether-api-tokens"  # its application_name in pg_stat_activity
RECONNECT = Backoff(first_s=0.5, max_s=10.0)


class RevocationListener:
    def __init__(self, store: Store, *, reconnect: Backoff = RECONNECT) -> None:
        self._store = store
        self._reconnect = Reconnect(
            "token revocation listener", retry_on=(Exception,), backoff=reconnect
        )
        self.connected = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until `stop` is set, reconnecting after every failure."""
        listening = asyncio.create_task(self._reconnect.forever(self._listen_once))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({listening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (listening, stopping):
                task.cancel()
            await asyncio.gather(listening, stopping, return_exceptions=True)

    def _notified(self, _channel: str, payload: str) -> None:
        try:
            token_id = int(payload)
        except ValueError:
            log.warning("unexpected token notification: every token is looked up again")
            self._store.forget_tokens()
            return
        self._store.forget_token(token_id)
        log.info("token revoked: refused from now on", token_id=token_id)

    async def _listen_once(self) -> None:
        try:
            async with self._store.listen_channels(
                (TOKEN_CHANNEL,), self._notified, application_name=LISTENER_NAME
            ) as listener:
                # Revocations made while not listening were not heard.
                self._store.forget_tokens()
                self._reconnect.connected()
                self.connected.set()
                await listener.wait_closed()
        finally:
            self.connected.clear()
