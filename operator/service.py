"""The operator process: a lease, workers, and the triggers that tell them when to look.

Triggers only enqueue project names: NOTIFY from desired writes, the Docker events stream, a full
resync every ~30 s, and per-project retry timers. Each side task reconnects on its own and resyncs
after any gap, since notifications and events sent while disconnected are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from tether.api.errors import StoreUnavailable
from tether.api.models import ConditionType, DesiredSnapshot
from tether.api.settings import Settings
from tether.api.store import DESIRED_CHANNEL, Store
from tether.operator.docker import DockerDriver, DockerFault, Summary
from tether.operator.health import Prober
from tether.operator.metrics import PASS_SECONDS, PASSES, PROJECTS, QUEUE_DEPTH, RETRIES
from tether.operator.queue import WorkQueue
from tether.operator.reconciler import Reconciler, build_desired
from tether.operator.state import Desired

log = structlog.get_logger("tether.operator")
RECONNECT_DELAY_S = (0.5, 10.0)
PROBE_CONCURRENCY = 32
EVENTS_SILENCE_S = 300.0
READINESS_PING_S = 3.0
RETRY_UNREAD_S = 2.0  # a pass that could not read Postgres or Docker
RETRY_CRASHED_S = 10.0  # a pass that failed on a bug


def at_rest(desired: Desired, snapshot: DesiredSnapshot, containers: list[Summary]) -> bool:
    """Whether a project is converged as far as one `docker ps` and its status can tell; a
    project that may not be is given a full pass."""
    status = snapshot.status
    if status is None or status.observed_generation != desired.generation or desired.deleting:
        return False
    reconciling = status.condition(ConditionType.RECONCILING)
    if reconciling is None or reconciling.status != "False":
        return False
    if not desired.running:
        return not any(c.state in ("running", "paused", "restarting") for c in containers)
    want = desired.target
    if status.failed_version is not None and desired.fallback is not None:
        want = desired.fallback
    if want is None or len(containers) != 1:
        return False
    [only] = containers
    return (
        only.state == "running"
        and only.version == want.version
        and only.spec_hash == want.spec_hash
        and (want.restart_token is None or only.restart_token == want.restart_token)
    )


class Operator:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        docker: DockerDriver,
        *,
        lease_ttl_s: float | None = None,
        holder: str | None = None,
        drain_grace_s: float = 30.0,
    ) -> None:
        self._settings = settings
        self._store = store
        self._docker = docker
        self._lease_ttl_s = lease_ttl_s or settings.lease_ttl_s
        self.holder = holder or f"operator-{uuid.uuid4().hex[:8]}"
        self._drain_grace_s = drain_grace_s
        self._lease_until = 0.0
        self._lease_gained = asyncio.Event()
        self._stopping = False
        self._alive = {"notify_listener": False, "docker_events": False}
        self._rng = random.Random()
        self.queue = WorkQueue()
        QUEUE_DEPTH.set_function(lambda: len(self.queue))
        self.prober = Prober(settings.publish_address)
        self.reconciler = Reconciler(
            store,
            docker,
            self.prober,
            publish_address=settings.publish_address,
            installation=settings.installation_id,
            holds_lease=self.holds_lease,
        )

    def holds_lease(self) -> bool:
        return time.monotonic() < self._lease_until

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile until `stop` is set, then let in-flight passes finish within the grace."""
        log.info(
            "operator starting", holder=self.holder, installation=self._settings.installation_id
        )
        side = [
            asyncio.create_task(self._keep_lease(), name="lease"),
            asyncio.create_task(self._listen_desired(), name="notify"),
            asyncio.create_task(self._follow_docker_events(), name="docker-events"),
            asyncio.create_task(self._resync_periodically(), name="resync"),
        ]
        idle: dict[asyncio.Task[None], bool] = {}
        workers = [
            asyncio.create_task(self._work(idle), name=f"worker-{i}")
            for i in range(self._settings.workers)
        ]
        for worker in workers:
            idle[worker] = True
        stopping = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait(
                [stopping, *side, *workers], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done - {stopping}:
                task.result()  # a side task or worker that ends on its own is a bug: surface it
                raise RuntimeError(f"{task.get_name()} ended unexpectedly")
        finally:
            self._stopping = True
            for task in side:
                task.cancel()
            busy = [w for w in workers if not idle.get(w) and not w.done()]
            for worker in workers:
                if idle.get(worker):
                    worker.cancel()
            if busy:
                log.info("draining in-flight passes", passes=len(busy))
                _, late = await asyncio.wait(busy, timeout=self._drain_grace_s)
                for worker in late:
                    worker.cancel()
            await asyncio.gather(*side, *workers, stopping, return_exceptions=True)
            stopping.cancel()
            self.queue.close()
            with contextlib.suppress(StoreUnavailable):
                await self._store.release_lease(self.holder)
            log.info("operator stopped", holder=self.holder)

    async def _work(self, idle: dict[asyncio.Task[None], bool]) -> None:
        me = asyncio.current_task()
        assert me is not None
        while not self._stopping:
            await self._lease_gained.wait()
            name = await self.queue.get()
            idle[me] = False
            try:
                await self._pass(name)
            finally:
                self.queue.done(name)
                idle[me] = True

    async def _pass(self, name: str) -> None:
        if not self.holds_lease():
            self.queue.add_after(name, 1.0)
            return
        began = time.monotonic()
        try:
            outcome = await self.reconciler.reconcile(name)
        except (StoreUnavailable, DockerFault) as exc:
            # Could not even read the desired state or observe: the next attempt will.
            status = exc.status if isinstance(exc, DockerFault) else None
            _log_unfinished(
                log.warning, name, "retrying", began, RETRY_UNREAD_S, status, error=str(exc)
            )
            _count("retrying", began, retry=True)
            self.queue.add_after(name, RETRY_UNREAD_S, backoff=True)
            return
        except Exception:
            # A bug in one project's pass must not stop the operator for every other project.
            _log_unfinished(log.exception, name, "crashed", began, RETRY_CRASHED_S, None)
            _count("crashed", began, retry=True)
            self.queue.add_after(name, RETRY_CRASHED_S, backoff=True)
            return
        _count(outcome.result, began, retry=outcome.backoff)
        if outcome.result == "deleted":
            self.queue.forget(name)
        elif outcome.requeue_after is not None:
            self.queue.add_after(name, outcome.requeue_after, backoff=outcome.backoff)

    async def _keep_lease(self) -> None:
        while True:
            asked = time.monotonic()
            try:
                held = await self._store.take_lease(self.holder, self._lease_ttl_s)
            except StoreUnavailable as exc:
                log.warning("lease renewal failed", error=str(exc))
                held = None
            if held:
                first = not self.holds_lease()
                # Counted from before the call: the database's expiry is always later than ours.
                self._lease_until = asked + self._lease_ttl_s - 1.0
                if first:
                    log.info("lease acquired: this operator is active", holder=self.holder)
                    self._lease_gained.set()
                    await self._resync_quietly()
            elif held is False:
                if self.holds_lease():
                    log.warning("lease lost: another operator is active", holder=self.holder)
                self._lease_until = 0.0
            await asyncio.sleep(self._lease_ttl_s / 3)

    async def _listen_desired(self) -> None:
        await self._reconnecting(self._listen_desired_once, "notify listener")

    async def _listen_desired_once(self) -> None:
        async with self._store.listen(
            DESIRED_CHANNEL, lambda name: self.queue.add(name, urgent=True)
        ) as listener:
            log.info("listening for desired-state changes")
            self._alive["notify_listener"] = True
            try:
                await self._resync_quietly()  # changes made while not listening were lost
                await listener.wait_closed()
            finally:
                self._alive["notify_listener"] = False
        log.warning("notify listener connection lost")

    async def _follow_docker_events(self) -> None:
        await self._reconnecting(self._follow_docker_events_once, "docker events")

    async def _follow_docker_events_once(self) -> None:
        # Events sent while not following are lost: resync, and have Docker replay whatever
        # happens from before that resync until the new subscription reaches it.
        since = time.time()
        await self._resync_quietly()
        events = self._docker.events(since=since)
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
        """What `/readyz` reports: Docker answers, and both triggers are connected. A standby
        operator (not `active`) is ready too: it takes over when the active one dies."""
        try:
            async with asyncio.timeout(READINESS_PING_S):
                await self._docker.ping()
            docker = True
        except (DockerFault, TimeoutError):
            docker = False
        return {"docker": docker, **self._alive, "active": self.holds_lease()}

    async def _reconnecting(self, once: Callable[[], Awaitable[None]], what: str) -> None:
        delay = RECONNECT_DELAY_S[0]
        while True:
            began = time.monotonic()
            try:
                await once()
            except (StoreUnavailable, DockerFault, OSError) as exc:
                log.warning(f"{what} failed", error=str(exc))
            if time.monotonic() - began > 30:
                delay = RECONNECT_DELAY_S[0]
            await asyncio.sleep(delay * self._rng.uniform(0.8, 1.2))
            delay = min(delay * 2, RECONNECT_DELAY_S[1])

    async def _resync_periodically(self) -> None:
        while True:
            period = self._settings.resync_interval_s
            await asyncio.sleep(period * self._rng.uniform(0.9, 1.1))
            await self._resync_quietly()

    async def _resync_quietly(self) -> None:
        try:
            await self.resync()
        except (StoreUnavailable, DockerFault) as exc:
            log.warning("resync failed", error=str(exc))

    async def resync(self) -> int:
        """One query and one container list; queue every project that may not be converged.
        Returns how many were queued."""
        snapshots = await self._store.desired_all()
        summaries = await self._docker.list_all()
        phases = Counter(s.status.phase if s.status else "Pending" for s in snapshots)
        PROJECTS.clear()
        for phase, count in phases.items():
            PROJECTS.labels(phase).set(count)
        by_project: dict[str, list[Summary]] = {}
        for summary in summaries:
            by_project.setdefault(summary.project, []).append(summary)
        queued = 0
        now = datetime.now(UTC)
        settled: list[DesiredSnapshot] = []
        for snapshot in snapshots:
            name = snapshot.project.name
            desired = build_desired(
                snapshot, self._settings.publish_address, self._settings.installation_id
            )
            if at_rest(desired, snapshot, by_project.pop(name, [])):
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
        for orphan in by_project:  # containers of projects that no longer exist
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


def _log_unfinished(
    emit: Callable[..., Any],
    project: str,
    result: str,
    began: float,
    next_delay_s: float,
    docker_status: int | None,
    **extra: str,
) -> None:
    """The outcome line of a pass that ended before it could read the project: the same fields as
    every other pass line (docs/logs.md), with what it did not learn left empty."""
    emit(
        "pass",
        project=project,
        pass_id=uuid.uuid4().hex[:12],
        generation=None,
        observed=None,
        desired=None,
        action=[],
        result=result,
        docker_status=docker_status,
        attempt=None,
        next_delay_s=next_delay_s,
        duration_ms=round((time.monotonic() - began) * 1000),
        **extra,
    )


def _count(result: str, began: float, *, retry: bool) -> None:
    PASSES.labels(result).inc()
    PASS_SECONDS.observe(time.monotonic() - began)
    if retry:
        RETRIES.inc()


def tune_garbage_collector() -> None:
    """For a process that runs the operator (`tether operator`, `tether up`): a resync turns
    every project's rows into objects at once. Under the default thresholds
    the collector runs full passes over that growing heap while it does, which made a resync at
    10 000 projects cost 40 % more per project than at 1 000 (docs/benchmarks.md, growth).
    Collecting young objects less often keeps it linear, at the cost of garbage cycles living a
    little longer: the idle benchmark's RSS figure includes it."""
    gc.set_threshold(50_000, 20, 20)


async def serve_operator(
    settings: Settings,
    store: Store,
    stop: asyncio.Event,
    on_start: Callable[[Operator], None] | None = None,
) -> None:
    """Run the operator until `stop` is set: what `tether operator` and `tether up` run.
    `on_start` receives the operator before it runs (for its readiness, in health endpoints)."""
    docker = DockerDriver(
        settings.docker_url, settings.installation_id, concurrency=settings.docker_concurrency
    )
    operator = Operator(settings, store, docker)
    if on_start is not None:
        on_start(operator)
    try:
        await operator.run(stop)
    finally:
        await docker.close()
