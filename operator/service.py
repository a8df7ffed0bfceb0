"""The operator process: a lease, workers, and the triggers that tell them when to look.

A standby waits for the lease (tether.operator.lease) and makes no runtime call at all. Once
active, for one tenure (one epoch), it runs workers and the triggers, which only enqueue project
names: NOTIFY from desired writes, the Docker events stream, a full resync every ~30 s, and
per-project retry timers; and it sends webhooks (tether.operator.webhooks.sender). Each trigger
reconnects on its own and resyncs after any gap, since notifications and events sent while
disconnected are lost. When the lease is lost (taken, expired,
its connection gone, or a write fenced), the tenure ends at once: its passes are cancelled, its
queue dropped, and the operator is a standby again.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from tether.api.errors import Fenced, StoreUnavailable
from tether.api.models import DesiredSnapshot
from tether.api.reconnect import Backoff, Reconnect
from tether.api.settings import Settings
from tether.api.store import DESIRED_CHANNEL, Store
from tether.operator.desired import build_desired
from tether.operator.health import Prober
from tether.operator.lease import Lease
from tether.operator.metrics import PASS_SECONDS, PASSES, PROJECTS, QUEUE_DEPTH, RETRIES
from tether.operator.queue import WorkQueue
from tether.operator.reconciler import Reconciler
from tether.operator.record import PassRecord, PassResult, log_pass
from tether.operator.runtime import LostLease, Runtime, RuntimeFault
from tether.operator.webhooks.sender import WebhookSender

log = structlog.get_logger("tether.operator")
RECONNECT_BACKOFF = Backoff(first_s=0.5, max_s=10.0)
RECONNECT_RESET_AFTER_S = 30.0  # a connection up this long starts the delays over
PROBE_CONCURRENCY = 32
# A starting endpoint is probed every 10 ms at first, less often later, with a pass at least every
# second (or the planner's next look, if later) to see the whole project again.
ENDPOINT_POLL_FIRST_S = 0.01
ENDPOINT_POLL_MAX_S = 0.2
ENDPOINT_WATCH_S = 1.0
EVENTS_SILENCE_S = 300.0
READINESS_PING_S = 3.0
RETRY_UNREAD_S = 2.0  # a pass that could not read Postgres or Docker
RETRY_CRASHED_S = 10.0  # a pass that failed on a bug


@dataclass(eq=False)
class _Tenure:
    """What runs while this operator holds the lease for one epoch."""

    epoch: int
    triggers: list[asyncio.Task[None]] = field(default_factory=list)
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    idle: dict[asyncio.Task[None], bool] = field(default_factory=dict)
    watchers: set[asyncio.Task[None]] = field(default_factory=set)  # endpoints awaited

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return [*self.triggers, *self.workers]


class Operator:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        runtime: Runtime[Any],
        *,
        lease_ttl_s: float | None = None,
        holder: str | None = None,
        drain_grace_s: float = 30.0,
        lease: Lease | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._runtime = runtime
        if lease is None:
            lease = Lease(
                store,
                holder or f"operator-{uuid.uuid4().hex[:8]}",
                lease_ttl_s or settings.lease_ttl_s,
            )
        self.lease = lease
        self.holder = lease.holder
        self._drain_grace_s = drain_grace_s
        self._tenure: _Tenure | None = None
        self._stopping = False
        self._alive = {"notify_listener": False, "docker_events": False}
        self._rng = random.Random()
        self.queue = WorkQueue()
        QUEUE_DEPTH.set_function(lambda: len(self.queue))
        self.prober = Prober(settings.publish_address)
        self.webhooks = WebhookSender(store, settings)
        self._probes = asyncio.Semaphore(PROBE_CONCURRENCY)  # of the endpoint watchers
        self.reconciler = Reconciler(
            store,
            runtime,
            publish_address=settings.publish_address,
            installation=settings.installation_id,
            holds_lease=self.holds_lease,
            epoch=self.lease.fencing_token,
        )

    def holds_lease(self) -> bool:
        return self.lease.holds()

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile until `stop` is set, then let in-flight passes finish within the grace and
        hand the lease over."""
        log.info(
            "operator starting", holder=self.holder, installation=self._settings.installation_id
        )
        side = [
            asyncio.create_task(self._lead(), name="lease"),
            asyncio.create_task(self._listen_desired(), name="notify"),
        ]
        stopping = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([stopping, *side], return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopping}:
                task.result()  # a side task that ends on its own is a bug: surface it
                raise RuntimeError(f"{task.get_name()} ended unexpectedly")
        finally:
            self._stopping = True
            side[1].cancel()
            if self._tenure is not None:
                await self._drain(self._tenure)  # the lease is still renewed meanwhile
            side[0].cancel()
            await asyncio.gather(*side, stopping, return_exceptions=True)
            stopping.cancel()
            self.queue.close()
            await self.lease.release()  # a standby waiting for the lock takes over at once
            log.info("operator stopped", holder=self.holder)

    async def _lead(self) -> None:
        """Standby until the lease is won, active until it is lost; and again."""
        while True:
            epoch = await self.lease.acquire()
            log.info(
                "lease acquired: this operator is active",
                holder=self.holder,
                epoch=epoch,
                monotonic=time.monotonic(),
            )
            tenure = self._begin(epoch)
            keep = asyncio.create_task(self.lease.keep(), name="lease-renewal")
            try:
                done, _ = await asyncio.wait(
                    [keep, *tenure.tasks], return_when=asyncio.FIRST_COMPLETED
                )
                if self._stopping and keep not in done:
                    # Draining (`run` cancels the idle workers and the triggers): the lease is
                    # kept renewed while the busy passes finish; `run` ends this task after.
                    await keep
                for task in done - {keep}:
                    task.result()  # a trigger or worker that ends on its own is a bug
                    raise RuntimeError(f"{task.get_name()} ended unexpectedly")
                reason = keep.result()
            finally:
                keep.cancel()
                await asyncio.gather(keep, return_exceptions=True)
                dropped = await self._end(tenure)
            log.warning(
                "lease lost: this operator is a standby again",
                holder=self.holder,
                epoch=epoch,
                reason=reason,
                dropped=dropped,
                monotonic=time.monotonic(),
            )

    def _begin(self, epoch: int) -> _Tenure:
        tenure = _Tenure(epoch)
        tenure.triggers = [
            asyncio.create_task(self._follow_docker_events(), name="docker-events"),
            asyncio.create_task(self._resync_periodically(), name="resync"),
            asyncio.create_task(self.webhooks.run(epoch), name="webhooks"),
        ]
        tenure.workers = [
            asyncio.create_task(self._work(tenure), name=f"worker-{i}")
            for i in range(self._settings.workers)
        ]
        for worker in tenure.workers:
            tenure.idle[worker] = True
        self._tenure = tenure
        return tenure

    async def _end(self, tenure: _Tenure) -> int:
        """Stop acting at once: cancel the tenure's passes and triggers, drop its queue. Returns
        how many projects were queued."""
        for task in [*tenure.tasks, *tenure.watchers]:
            task.cancel()
        await asyncio.gather(*tenure.tasks, *tenure.watchers, return_exceptions=True)
        self._tenure = None
        dropped = len(self.queue)
        self.queue.close()
        self.queue = WorkQueue()
        return dropped

    async def _drain(self, tenure: _Tenure) -> None:
        """Shutdown: no new passes; in-flight ones finish within the grace."""
        for task in [*tenure.triggers, *tenure.watchers]:
            task.cancel()
        busy = [w for w in tenure.workers if not tenure.idle.get(w) and not w.done()]
        for worker in tenure.workers:
            if tenure.idle.get(worker):
                worker.cancel()
        if busy:
            log.info("draining in-flight passes", passes=len(busy))
            _, late = await asyncio.wait(busy, timeout=self._drain_grace_s)
            for worker in late:
                worker.cancel()
        await asyncio.gather(*tenure.tasks, return_exceptions=True)

    async def _work(self, tenure: _Tenure) -> None:
        me = asyncio.current_task()
        assert me is not None
        while not self._stopping:
            name = await self.queue.get()
            tenure.idle[me] = False
            try:
                await self._pass(name, tenure)
            finally:
                self.queue.done(name)
                tenure.idle[me] = True

    async def _pass(self, name: str, tenure: _Tenure) -> None:
        if not self.holds_lease():
            return  # the tenure is ending: its queue is dropped
        began = time.monotonic()
        try:
            outcome = await self.reconciler.reconcile(name)
        except (LostLease, Fenced) as exc:
            # The lease expired under this pass, or the database refused its write: another
            # operator may be active. Act no more; the tenure ends.
            log.warning("pass stopped: not the active operator", project=name, error=str(exc))
            if isinstance(exc, Fenced):
                self.lease.drop()
            return
        except (StoreUnavailable, RuntimeFault) as exc:
            # Could not even read the desired state or observe: the next attempt will.
            unread = PassRecord(project=name, began=began)
            unread.docker_status = exc.status if isinstance(exc, RuntimeFault) else None
            log_pass(
                unread,
                "retrying",
                attempt=None,
                next_delay_s=RETRY_UNREAD_S,
                error=str(exc),
                level="warning",
            )
            _count("retrying", began, retry=True)
            self.queue.add_after(name, RETRY_UNREAD_S, backoff=True)
            return
        except Exception:
            # A bug in one project's pass must not stop the operator for every other project.
            crashed = PassRecord(project=name, began=began)
            log_pass(
                crashed, "crashed", attempt=None, next_delay_s=RETRY_CRASHED_S, level="exception"
            )
            _count("crashed", began, retry=True)
            self.queue.add_after(name, RETRY_CRASHED_S, backoff=True)
            return
        _count(outcome.result, began, retry=outcome.backoff)
        if outcome.result == "deleted":
            self.queue.forget(name)
        elif outcome.answers is not None:
            horizon = max(outcome.requeue_after or 0.0, ENDPOINT_WATCH_S)
            watcher = asyncio.create_task(self._watch_endpoint(name, outcome.answers, horizon))
            tenure.watchers.add(watcher)
            watcher.add_done_callback(tenure.watchers.discard)
        elif outcome.requeue_after is not None:
            self.queue.add_after(name, outcome.requeue_after, backoff=outcome.backoff)

    async def _watch_endpoint(
        self, name: str, answers: Callable[[], Awaitable[bool]], within_s: float
    ) -> None:
        """Probe a starting endpoint, holding no worker, until it answers (its pass records it
        Ready) or for `within_s` (its pass looks at the whole project again). Either pass is
        short, and goes ahead of the queue: behind a bulk start's queue, it would wait for
        every other project's start."""
        deadline = time.monotonic() + within_s
        every = ENDPOINT_POLL_FIRST_S
        answered = False
        while not answered and time.monotonic() < deadline:
            await asyncio.sleep(every)
            every = min(every * 1.5, ENDPOINT_POLL_MAX_S)
            try:
                async with self._probes:
                    answered = await answers()
            except (RuntimeFault, StoreUnavailable):
                break  # the pass will see why
        self.queue.add(name, first=True)

    async def _listen_desired(self) -> None:
        await self._reconnecting(self._listen_desired_once, "notify listener")

    async def _listen_desired_once(self) -> None:
        async with self._store.listen(DESIRED_CHANNEL, self._desired_changed) as listener:
            log.info("listening for desired-state changes")
            self._alive["notify_listener"] = True
            try:
                await self._resync_quietly()  # changes made while not listening were lost
                await listener.wait_closed()
            finally:
                self._alive["notify_listener"] = False
        log.warning("notify listener connection lost")

    def _desired_changed(self, name: str) -> None:
        if self.holds_lease():  # a standby queues nothing: it resyncs when it takes over
            self.queue.add(name, urgent=True)

    async def _follow_docker_events(self) -> None:
        await self._reconnecting(self._follow_docker_events_once, "docker events")

    async def _follow_docker_events_once(self) -> None:
        # Events sent while not following are lost: resync, and have Docker replay whatever
        # happens from before that resync until the new subscription reaches it.
        since = time.time()
        await self._resync_quietly()
        events = self._runtime.changes(since)
        self._alive["docker_events"] = True
        try:
            while True:
                try:
                    # A stream can die without ending: one silent for long is replaced, and the
                    # resync that follows covers anything it may have missed.
                    async with asyncio.timeout(EVENTS_SILENCE_S):
                        project = await anext(events)
                except StopAsyncIteration:
                    log.warning("docker events stream ended")
                    return
                except TimeoutError:
                    log.info("docker events stream silent: reconnecting", silent_s=EVENTS_SILENCE_S)
                    return
                self.queue.add(project)
        finally:
            self._alive["docker_events"] = False
            await events.aclose()

    async def readiness(self) -> dict[str, bool]:
        """What `/readyz` reports: Docker answers, and the triggers are connected. A standby
        operator (not `active`) is ready too: it takes over when the active one dies; it follows
        no Docker events (it acts on nothing), so that check is the active one's only."""
        try:
            async with asyncio.timeout(READINESS_PING_S):
                await self._runtime.ping()
            docker = True
        except (RuntimeFault, TimeoutError, LostLease):
            docker = False
        try:
            async with asyncio.timeout(READINESS_PING_S):
                await self._runtime.ping_proxy()
            proxy = True
        except (RuntimeFault, TimeoutError):
            proxy = False
        active = self.holds_lease()
        return {
            "docker": docker,
            "proxy": proxy,
            "notify_listener": self._alive["notify_listener"],
            "docker_events": self._alive["docker_events"] or not active,
            "active": active,
        }

    async def lease_info(self) -> dict[str, str | int | None]:
        """What `/readyz` reports of the lease: this operator's name and epoch (None while a
        standby), and the active holder and epoch as the database has them."""
        info: dict[str, str | int | None] = {
            "holder": self.holder,
            "epoch": self.lease.epoch if self.holds_lease() else None,
        }
        try:
            current = await self._store.lease()
        except StoreUnavailable:
            return info
        if current is not None:
            info["lease_holder"] = current.holder if current.live else None
            info["lease_epoch"] = current.epoch
        return info

    async def _reconnecting(self, once: Callable[[], Awaitable[None]], what: str) -> None:
        await Reconnect(
            what,
            retry_on=(StoreUnavailable, RuntimeFault, OSError, LostLease),
            backoff=RECONNECT_BACKOFF,
            reset_after_s=RECONNECT_RESET_AFTER_S,
            rng=self._rng,
        ).forever(once)

    async def _resync_periodically(self) -> None:
        while True:
            period = self._settings.resync_interval_s
            await asyncio.sleep(period * self._rng.uniform(0.9, 1.1))
            await self._resync_quietly()
            await self._measure_volumes()

    async def _measure_volumes(self) -> None:
        """Volume sizes for `tether volumes`: Docker measures them by walking each volume, so
        only here, once a resync period, never in a pass."""
        if not self.holds_lease():
            return
        try:
            sizes = await self._runtime.volume_sizes()
            if sizes:
                await self._store.record_volume_sizes(sizes)
        except (StoreUnavailable, RuntimeFault) as exc:
            log.warning("measuring volumes failed", error=str(exc))
        except LostLease:
            pass  # the tenure is ending

    async def _resync_quietly(self) -> None:
        if not self.holds_lease():
            return  # a standby calls no runtime: it resyncs when it takes over
        try:
            await self.resync()
        except (StoreUnavailable, RuntimeFault) as exc:
            log.warning("resync failed", error=str(exc))
        except LostLease:
            pass  # the tenure is ending
        except Fenced:
            self.lease.drop()  # the nodes' write was refused: another operator is active

    async def resync(self) -> int:
        """One query and one container list; queue every project that may not be converged.
        Returns how many were queued."""
        snapshots = await self._store.desired_all()
        survey = await self._runtime.survey()
        nodes = survey.nodes()
        if nodes is not None:
            await self._store.write_nodes(nodes, epoch=self.lease.fencing_token())
        phases = Counter(s.status.phase if s.status else "Pending" for s in snapshots)
        PROJECTS.clear()
        for phase, count in phases.items():
            PROJECTS.labels(phase).set(count)
        orphans = set(survey.projects())
        queued = 0
        now = datetime.now(UTC)
        settled: list[DesiredSnapshot] = []
        for snapshot in snapshots:
            name = snapshot.project.name
            desired = build_desired(snapshot, self._settings.installation_id)
            orphans.discard(name)
            if survey.at_rest(desired, snapshot):
                if desired.running:
                    settled.append(snapshot)
                continue
            status = snapshot.status
            same_generation = status is not None and (
                status.observed_generation == desired.generation
            )
            due = status.next_attempt_at if status is not None and same_generation else None
            if due is not None and due > now:
                # Keeps the timers of a failing project across operator restarts.
                backoff = status is not None and status.attempts > 0
                self.queue.add_after(name, (due - now).total_seconds(), backoff=backoff)
            else:
                self.queue.add(name)
            queued += 1
        for orphan in orphans:  # workloads of projects that no longer exist
            self.queue.add(orphan)
            queued += 1
        return queued + await self._recheck_endpoints(settled)

    async def _recheck_endpoints(self, settled: list[DesiredSnapshot]) -> int:
        """Ready must stay true: probe the endpoints of settled projects (no Docker call) and
        give a pass to those that stopped answering."""

        slots = asyncio.Semaphore(PROBE_CONCURRENCY)

        async def failing(snapshot: DesiredSnapshot) -> bool:
            target = snapshot.target
            assert target is not None  # settled and running
            async with slots:
                healthy = await self.prober.healthy(
                    target.health, target.port, snapshot.project.host_port
                )
            return not healthy

        probes = [s for s in settled if s.target is not None and s.target.port is not None]
        results = await asyncio.gather(*(failing(s) for s in probes))
        for snapshot, bad in zip(probes, results, strict=True):
            if bad:
                self.queue.add(snapshot.project.name)
        return sum(results)


def _count(result: PassResult, began: float, *, retry: bool) -> None:
    PASSES.labels(result).inc()
    PASS_SECONDS.observe(time.monotonic() - began)
    if retry:
        RETRIES.inc()
