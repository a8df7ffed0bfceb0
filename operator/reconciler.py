"""One reconcile pass: read the desired state fresh, observe the runtime fresh, plan, act, observe
again, and write what happened as status and events, with exactly one log line for the outcome.

The pass drives a `Runtime` (tether.operator.runtime) and never learns which one runs.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Generic

from tether.api.errors import StoreUnavailable
from tether.api.models import ConditionType, DesiredSnapshot, EventKind, NewEvent, Status
from tether.api.store import Store
from tether.operator.desired import (
    Desired,
    Memory,
    build_desired,
    describe_desired,
    memory_of,
)
from tether.operator.health import probe_host
from tether.operator.metrics import CONVERGENCE_SECONDS
from tether.operator.record import Outcome, PassRecord, PassResult, log_pass
from tether.operator.retry import retry_delay
from tether.operator.runtime import (
    Decision,
    FailRollout,
    Finalize,
    LostLease,
    ObservedT,
    Refused,
    Runtime,
    RuntimeFault,
)
from tether.operator.status import Failure, build_status, outside_changes, transitions

MAX_STEPS = 16
# How long a pass that started a workload probes its endpoint (every SAME_PASS_PROBE_S), holding
# its worker, before it leaves the wait to a watcher that holds none (Operator._watch_endpoint).
# Every 5 ms, as the benchmark's floor polls: at 10 ms, Ready was recorded ~2.5 ms later on
# average than the endpoint first answered (docs/benchmarks.md, item 1).
SAME_PASS_READY_S = 0.1
SAME_PASS_PROBE_S = 0.005


class NoProgress(Exception):
    """An action was carried out, yet the runtime shows the same state: it lied, or it was
    undone."""


class Reconciler(Generic[ObservedT]):
    def __init__(
        self,
        store: Store,
        runtime: Runtime[ObservedT],
        *,
        publish_address: str,
        installation: str,
        holds_lease: Callable[[], bool],
        epoch: Callable[[], int | None] = lambda: None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._publish_address = publish_address
        self._installation = installation
        self._holds_lease = holds_lease
        self._epoch = epoch  # fences every status write (None: unfenced, passes run by hand)
        self._rng = rng or random.Random()

    async def reconcile(self, name: str) -> Outcome:
        record = PassRecord(project=name)
        snapshot = await self._store.desired(name)
        if snapshot is None:
            return await self._remove_orphans(record)
        desired = build_desired(snapshot, self._installation)
        previous = snapshot.status
        same_generation = (
            previous is not None and previous.observed_generation == desired.generation
        )
        attempts_before = previous.attempts if previous is not None and same_generation else 0
        memory = memory_of(snapshot)
        record.generation = desired.generation
        record.desired = describe_desired(desired, memory)
        try:
            ending, observed = await self._steps(desired, memory, record)
        except LostLease:
            log_pass(
                record, "lost_lease", attempt=attempts_before, next_delay_s=None, level="warning"
            )
            return Outcome("lost_lease")
        except (RuntimeFault, NoProgress, StoreUnavailable) as exc:
            if isinstance(exc, RuntimeFault) and exc.status is not None:
                record.docker_status = exc.status
            attempts = attempts_before + 1
            failure = Failure(
                error=exc,
                terminal=isinstance(exc, RuntimeFault) and not exc.transient,
                attempts=attempts,
                delay_s=retry_delay(attempts, self._rng.uniform(-1.0, 1.0)),
            )
            return await self._record(snapshot, desired, memory, failure, record)
        if isinstance(ending.action, Finalize):
            if record.events:  # the volumes it removed, told to watchers before the project goes
                await self._store.write_status(
                    build_status(
                        snapshot, desired, memory, ending, endpoint=None, now=datetime.now(UTC)
                    ),
                    record.events,
                    actor="operator",
                    epoch=self._epoch(),
                )
            await self._store.finish_deletion(name, desired.generation, epoch=self._epoch())
            log_pass(record, "deleted", attempt=0, next_delay_s=None)
            return Outcome("deleted")
        outcome = await self._record(snapshot, desired, ending.memory, ending, record)
        if ending.endpoint_pending and outcome.requeue_after is not None:
            return replace(outcome, answers=lambda: self._answers(desired, ending, observed))
        return outcome

    async def _answers(self, desired: Desired, ending: Decision, observed: ObservedT) -> bool:
        """Whether the endpoint a pass ended waiting for answers now: what that pass saw,
        probed again."""
        seen = await self._runtime.observe(desired, ending.memory, observed)
        return not self._runtime.plan(desired, seen, ending.memory).endpoint_pending

    async def _steps(
        self, desired: Desired, memory: Memory, record: PassRecord
    ) -> tuple[Decision, ObservedT]:
        """Plan and act, one step at a time on fresh observations, until the planner has
        nothing to do now (or the project can be deleted); and what it decided on."""
        runtime = self._runtime
        last_key: object = None
        observed: ObservedT | None = None
        steps = 0
        pending_since: float | None = None
        while steps < MAX_STEPS:
            observed = await runtime.observe(desired, memory, observed)
            record.observed = record.observed or runtime.describe(observed)
            decision = runtime.plan(desired, observed, memory)
            memory = decision.memory
            step = decision.action
            if step is None:
                if decision.endpoint_pending and record.actions:
                    # This pass started the workload: most endpoints answer within a few ms,
                    # and a probe now saves a second pass and status write after a timer.
                    pending_since = pending_since or time.monotonic()
                    if time.monotonic() - pending_since < SAME_PASS_READY_S:
                        await asyncio.sleep(SAME_PASS_PROBE_S)
                        continue  # observing what `act` returned: a probe, no runtime call
                return decision, observed
            steps += 1
            if step.key == last_key:
                raise NoProgress(
                    f"{step.label} had no effect: the runtime still shows "
                    f"{runtime.describe(observed)}"
                )
            last_key = step.key
            record.actions.append(step.label)
            if isinstance(step, Finalize):
                if desired.delete_volumes:
                    for removed in await runtime.delete_volumes(desired):
                        record.actions.append(removed)
                        record.events.append(NewEvent(EventKind.ACTION, removed, "as asked"))
                return decision, observed
            if isinstance(step, FailRollout):
                memory = replace(memory, failed_version=step.version)
                record.events.append(NewEvent(EventKind.HEALTH, "RolloutFailed", decision.message))
                continue
            if not self._holds_lease():
                raise LostLease("the operator lease was lost; another operator may act")
            try:
                observed = await runtime.act(desired, step, observed)
            except Refused as exc:
                record.docker_status = exc.status
                record.events.append(NewEvent(EventKind.REFUSED, exc.operation, str(exc)))
                observed = None
                continue
            record.events.append(NewEvent(step.kind, step.label, decision.message))
        raise NoProgress(f"no convergence after {MAX_STEPS} steps")

    async def _record(
        self,
        snapshot: DesiredSnapshot,
        desired: Desired,
        memory: Memory,
        ending: Decision | Failure,
        record: PassRecord,
    ) -> Outcome:
        """Write the pass's status and events, and its log line."""
        now = datetime.now(UTC)
        status = build_status(
            snapshot, desired, memory, ending, endpoint=self._endpoint(snapshot), now=now
        )
        acted = (
            [] if isinstance(ending, Failure) else record.actions
        )  # a failed pass repaired nothing
        record.events.extend(outside_changes(snapshot.status, status, acted, record.observed))
        record.events.extend(transitions(snapshot.status, status, desired))
        result = _result(ending, status)
        if isinstance(ending, Failure):
            error = ending.message
            try:
                await self._store.write_status(
                    status, record.events, actor="operator", epoch=self._epoch()
                )
            except StoreUnavailable as exc:
                error = f"{error}; status not written: {exc}"
            delay = round(ending.delay_s, 3)
            log_pass(
                record,
                result,
                attempt=ending.attempts,
                next_delay_s=delay,
                error=error,
                level="warning",
            )
            return Outcome(result, ending.delay_s, backoff=True)
        await self._store.write_status(status, record.events, actor="operator", epoch=self._epoch())
        if ending.volumes or desired.volumes:
            await self._store.record_volumes(desired.name, ending.volumes, epoch=self._epoch())
        if any(event.kind == EventKind.CONVERGED for event in record.events):
            CONVERGENCE_SECONDS.observe((now - snapshot.project.updated_at).total_seconds())
        log_pass(record, result, attempt=0, next_delay_s=ending.requeue_after)
        return Outcome(result, ending.requeue_after)

    def _endpoint(self, snapshot: DesiredSnapshot) -> str | None:
        target = snapshot.target
        if target is None or target.port is None:
            return None
        return f"{probe_host(self._publish_address)}:{snapshot.project.host_port}"

    async def _remove_orphans(self, record: PassRecord) -> Outcome:
        """What still runs for a project that no longer exists: stop and remove it."""
        record.desired = "absent"
        record.actions = await self._runtime.remove_orphans(record.project, self._holds_lease)
        log_pass(record, "deleted", attempt=0, next_delay_s=None)
        return Outcome("deleted")


def _result(ending: Decision | Failure, status: Status) -> PassResult:
    stalled = status.condition(ConditionType.STALLED)
    if stalled is not None and stalled.status == "True":
        return "stalled"
    if isinstance(ending, Failure):
        return "retrying"
    return "converged" if ending.requeue_after is None and not ending.stalled else "waiting"
