"""The webhook sender: delivers the outbox (webhook_deliveries) while this operator is active.

It runs in the operator's tenure, like the triggers: one active operator sends, a standby sends
nothing, and a tenure that ends cancels its attempts at once. Delivery is at least once, in order
per hook and project (the database hands out only the oldest pending delivery of each pair):

- an attempt is claimed in the database for at most the attempt's bound (`claim_s`) by this
  tenure's epoch; an operator that dies mid-attempt leaves its claim, which the next tenure makes
  due at once (`release_deliveries`), or which falls due when the bound has passed;
- a failed attempt is retried after an exponential delay with jitter, until the delivery is older
  than the give-up time (`failed`);
- it wakes on the outbox's NOTIFY, when an attempt ends, and on a timer for the next retry due;
  Postgres down: the claims and results are retried, the listener reconnects, nothing is lost
  (a result that could not be written is sent again: at least once).

Its log lines name the hook, the delivery and the project; never a URL (its query may carry a
token) and never a secret.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import NoReturn

import structlog

from tether.api.errors import StoreUnavailable
from tether.api.reconnect import Backoff, GaveUp, Reconnect
from tether.api.settings import Settings
from tether.api.store import WEBHOOK_CHANNEL, Store
from tether.api.webhooks import MAX_ANSWER_CHARS, DeliveryClaim
from tether.operator.webhooks.post import Answer, Poster
from tether.operator.webhooks.signing import headers

log = structlog.get_logger("tether.webhooks")
RETRY_FIRST_S = 1.0
POLL_S = 30.0  # the longest sleep: covers a NOTIFY lost while the listener was reconnecting
MIN_WAIT_S = 0.05
CLAIM_MARGIN_S = 5.0  # an attempt's claim outlasts its bound by this much
STORE_BACKOFF = Backoff(first_s=0.5, max_s=10.0)
LISTENER_NAME = "tether-webhooks"  # its application_name in pg_stat_activity
PRUNE_EVERY_S = 3600.0


class WebhookSender:
    def __init__(self, store: Store, settings: Settings, *, rng: random.Random | None = None):
        self._store = store
        self._settings = settings
        self._rng = rng or random.Random()
        self._retry = Backoff(first_s=RETRY_FIRST_S, max_s=settings.webhook_retry_max_s)
        self.claim_s = settings.webhook_timeout_s + CLAIM_MARGIN_S
        self._wake = asyncio.Event()

    async def run(self, epoch: int) -> NoReturn:
        """Deliver, as the tenure of `epoch`, until cancelled."""
        settings = self._settings
        poster = Poster(
            connect_s=settings.webhook_connect_timeout_s,
            read_s=settings.webhook_read_timeout_s,
            total_s=settings.webhook_timeout_s,
            concurrency=settings.webhook_concurrency,
        )
        listener = asyncio.create_task(self._listen(), name="webhook-listener")
        in_flight: set[asyncio.Task[None]] = set()
        try:
            await self._loop(epoch, poster, in_flight)
        finally:
            for task in (listener, *in_flight):
                task.cancel()
            await asyncio.gather(listener, *in_flight, return_exceptions=True)
            await poster.close()

    async def _loop(
        self, epoch: int, poster: Poster, in_flight: set[asyncio.Task[None]]
    ) -> NoReturn:
        released = False
        pruned_at: float | None = None
        failures = 0
        while True:
            self._wake.clear()
            wait_s = POLL_S
            free = self._settings.webhook_concurrency - len(in_flight)
            if free > 0:
                try:
                    if not released:
                        left = await self._store.release_deliveries(epoch)
                        if left:
                            log.info("webhook attempts left in flight are due again", count=left)
                        released = True
                    if pruned_at is None or time.monotonic() - pruned_at >= PRUNE_EVERY_S:
                        await self._prune()
                        pruned_at = time.monotonic()
                    for claim in await self._store.claim_deliveries(
                        epoch, free, claim_s=self.claim_s
                    ):
                        in_flight.add(
                            asyncio.create_task(
                                self._attempt(claim, epoch, poster), name=f"webhook-{claim.id}"
                            )
                        )
                    due = await self._store.next_delivery_due()
                    failures = 0
                    if due is not None:
                        wait_s = min(max(due, MIN_WAIT_S), POLL_S)
                except StoreUnavailable as exc:
                    failures += 1
                    wait_s = STORE_BACKOFF.delay(failures, self._rng)
                    log.warning("webhook outbox unreadable", error=str(exc), delay_s=wait_s)
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                done, _ = await asyncio.wait(
                    [woken, *in_flight], timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                woken.cancel()
            for task in done - {woken}:
                in_flight.discard(task)
                if not task.cancelled() and (error := task.exception()) is not None:
                    # A bug in one attempt must not stop every delivery: its claim runs out and
                    # it is tried again then.
                    log.error("webhook attempt crashed", task=task.get_name(), exc_info=error)

    async def _prune(self) -> None:
        keep_s = self._settings.webhook_keep_s
        pruned = await self._store.prune_deliveries(keep_s)
        if pruned:
            log.info("finished webhook deliveries pruned", count=pruned, older_than_s=keep_s)

    async def _attempt(self, claim: DeliveryClaim, epoch: int, poster: Poster) -> None:
        body = json.dumps(claim.payload, separators=(",", ":"), ensure_ascii=False).encode()
        began = time.monotonic()
        sent = headers(claim.secret, claim.message_id, int(time.time()), body)
        answer = await poster.post(claim.url, sent, body)
        retry_in_s = self._retry.delay(claim.attempt, self._rng)
        try:
            state = await self._finish(claim, epoch, answer, retry_in_s)
        except GaveUp as exc:
            # The claim runs out and the delivery is sent again: at least once.
            state = None
            log.warning("webhook result not recorded", delivery=claim.id, error=str(exc))
        log.info(
            "webhook attempt",
            webhook=claim.webhook,
            delivery=claim.id,
            message_id=claim.message_id,
            project=claim.payload.get("data", {}).get("project"),
            type=claim.payload.get("type"),
            attempt=claim.attempt,
            status=answer.status,
            result=state,
            next_delay_s=round(retry_in_s, 2) if state == "pending" else None,
            duration_ms=round((time.monotonic() - began) * 1000),
        )

    async def _finish(
        self, claim: DeliveryClaim, epoch: int, answer: Answer, retry_in_s: float
    ) -> str | None:
        async def once() -> str | None:
            return await self._store.finish_attempt(
                claim,
                epoch,
                delivered=answer.delivered,
                status=answer.status,
                answer=answer.text[:MAX_ANSWER_CHARS],
                retry_in_s=retry_in_s,
                give_up_after_s=self._settings.webhook_give_up_after_s,
            )

        return await Reconnect(
            "webhook result",
            retry_on=(StoreUnavailable,),
            backoff=STORE_BACKOFF,
            give_up_after_s=CLAIM_MARGIN_S,
            rng=self._rng,
        ).until_done(once)

    async def _listen(self) -> NoReturn:
        async def once() -> None:
            wake = self._wake.set
            async with self._store.listen_channels(
                [WEBHOOK_CHANNEL], lambda _channel, _project: wake(), application_name=LISTENER_NAME
            ) as listener:
                wake()  # whatever was written while not listening
                await listener.wait_closed()

        await Reconnect(
            "webhook listener",
            retry_on=(StoreUnavailable, OSError),
            backoff=STORE_BACKOFF,
            reset_after_s=30.0,
            rng=self._rng,
        ).forever(once)
