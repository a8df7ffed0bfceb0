"""`tether operator`, exactly, plus what the benchmarks read from outside: Prometheus metrics on
127.0.0.1:$BENCH_METRICS_PORT (tether's own, and `bench_docker_calls_total`, which counts every
call through the Docker driver's single entry point, `DockerDriver.call`, and
`bench_docker_call_seconds`, their wall time), and, with $BENCH_TRACE set, a trace of each
project's passes: one JSON line per moment (Unix time `t`, `project`, `what`) appended to that
file, read by bench/phases.py (a container change's moments: issued, its slot taken, done).

Run as `python bench/operator_process.py` with the TETHER_* variables of `tether operator`.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import IO, Any

from prometheus_client import Counter, Histogram, start_http_server

from tether.api.models import ConditionType, NewEvent, Status
from tether.api.store import Store
from tether.cli.main import run
from tether.operator import dockerapi
from tether.operator.desired import Desired, Memory
from tether.operator.engine.docker.driver import DockerDriver
from tether.operator.engine.runtime import EngineRuntime
from tether.operator.engine.state import Observed
from tether.operator.reconciler import Reconciler
from tether.operator.record import Outcome
from tether.operator.runtime import Step
from tether.operator.service import Operator

CALLS = Counter("bench_docker_calls", "Calls through DockerDriver.call.", ["operation"])
CALL_SECONDS = Histogram(
    "bench_docker_call_seconds",
    "Wall time of calls through DockerDriver.call (retries and the wait for a slot included).",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def count_docker_calls() -> None:
    original = DockerDriver.call

    async def counted(
        self: DockerDriver, operation: str, call: Callable[[], Awaitable[Any]], **kwargs: Any
    ) -> Any:
        CALLS.labels(operation).inc()
        began = time.monotonic()
        try:
            return await original(self, operation, call, **kwargs)
        finally:
            CALL_SECONDS.labels(operation).observe(time.monotonic() - began)

    DockerDriver.call = counted  # type: ignore[method-assign]


# The project whose container change the current task carries out, for the slot's mark.
CHANGING: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "changing", default=None
)


class MarkedSlots:
    """The driver's change slots, marking the moment one is taken for the current change."""

    def __init__(self, slots: asyncio.Semaphore, taken: Callable[[], None]) -> None:
        self._slots, self._taken = slots, taken

    async def __aenter__(self) -> None:
        await self._slots.acquire()
        self._taken()

    async def __aexit__(self, *_: object) -> None:
        self._slots.release()


class Trace:
    """Each moment of a pass that bench/phases.py breaks the bulk time down by, taken at tether's
    own seams (the NOTIFY callback, the pass, the runtime's act and probe, the status write)."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def mark(self, project: str, what: str, **extra: Any) -> None:
        line = {"t": time.time(), "project": project, "what": what, **extra}
        self._out.write(json.dumps(line) + "\n")

    def install(self) -> None:
        mark = self.mark
        changed = Operator._desired_changed
        reconcile = Reconciler.reconcile
        carry_out = EngineRuntime._carry_out
        probe = EngineRuntime._probe
        write_status = Store.write_status
        docker_call = dockerapi.docker_call

        def desired_changed(self: Operator, name: str) -> None:
            mark(name, "notified")
            changed(self, name)

        async def traced_reconcile(self: Reconciler[Any], name: str) -> Outcome:
            mark(name, "pass")
            outcome = await reconcile(self, name)
            mark(name, "pass_end", result=outcome.result)
            return outcome

        async def traced_carry_out(self: EngineRuntime, desired: Desired, step: Step) -> None:
            action = step.label.split()[0]
            mark(desired.name, f"{action}_call")
            changing = CHANGING.set((desired.name, action))
            try:
                await carry_out(self, desired, step)
            finally:
                CHANGING.reset(changing)
            mark(desired.name, f"{action}_done")

        async def traced_docker_call(
            operation: str, call: Callable[[], Awaitable[Any]], **kwargs: Any
        ) -> Any:
            changing = CHANGING.get()
            if changing is not None and changing[1] == operation:
                project, action = changing
                kwargs["slots"] = MarkedSlots(
                    kwargs["slots"], lambda: mark(project, f"{action}_slot")
                )
            return await docker_call(operation, call, **kwargs)

        async def traced_probe(
            self: EngineRuntime, desired: Desired, memory: Memory, seen: Observed
        ) -> dict[str, bool]:
            healthy = await probe(self, desired, memory, seen)
            if healthy:
                mark(desired.name, "probe", answered=any(healthy.values()))
            return healthy

        async def traced_write_status(
            self: Store, status: Status, events: Any, actor: str, **kwargs: Any
        ) -> None:
            await write_status(self, status, events, actor, **kwargs)
            ready = status.condition(ConditionType.READY)
            kinds = [NewEvent(*e).reason for e in events]
            mark(
                status.project,
                "status",
                phase=str(status.phase),
                ready=ready is not None and ready.status == "True",
                events=kinds,
            )

        Operator._desired_changed = desired_changed  # type: ignore[method-assign]
        Reconciler.reconcile = traced_reconcile  # type: ignore[method-assign]
        EngineRuntime._carry_out = traced_carry_out  # type: ignore[method-assign]
        EngineRuntime._probe = traced_probe  # type: ignore[method-assign]
        Store.write_status = traced_write_status  # type: ignore[method-assign]
        dockerapi.docker_call = traced_docker_call  # type: ignore[assignment]


def main() -> None:
    count_docker_calls()
    trace_path = os.environ.get("BENCH_TRACE")
    if trace_path:
        Trace(open(trace_path, "a", buffering=1)).install()  # noqa: SIM115 (lives as long as the process)
    start_http_server(int(os.environ["BENCH_METRICS_PORT"]), addr="127.0.0.1")
    sys.exit(run(["operator"]))


if __name__ == "__main__":
    main()
