"""The operator process as `tether operator` and `tether up` run it: on the runtime the settings
choose."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import Callable

from tether.api.settings import Settings
from tether.api.store import Store
from tether.operator.lease import Lease
from tether.operator.runtimes import open_runtime
from tether.operator.service import Operator


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
    lease = Lease(store, f"operator-{uuid.uuid4().hex[:8]}", settings.lease_ttl_s)
    # Every runtime call checks the lease first: a stale operator makes none.
    runtime = open_runtime(settings, guard=lease.check)
    operator = Operator(settings, store, runtime, lease=lease)
    if on_start is not None:
        on_start(operator)
    try:
        await operator.run(stop)
    finally:
        await runtime.close()
