"""`tether operator`, exactly, plus what the benchmarks read from outside: Prometheus metrics on
127.0.0.1:$BENCH_METRICS_PORT (tether's own, and `bench_docker_calls_total`, which counts every
call through the Docker driver's single entry point, `DockerDriver._call`, and
`bench_docker_call_seconds`, their wall time).

BENCH_VARIANT=ignore-own-events (a what-if, not tether as shipped): Docker events that merely echo
an action this operator has just taken (`start` after its start; `kill`, `die`, `stop` after its
stop; `destroy` after its remove) do not queue another pass: the pass that acted has already
observed the result. Applied where aiodocker hands events to the driver.

Run as `python bench/operator_process.py` with the TETHER_* variables of `tether operator`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiodocker.docker import DockerEvents
from prometheus_client import Counter, Histogram, start_http_server

from tether.cli.main import run
from tether.operator.docker import DockerDriver

CALLS = Counter("bench_docker_calls", "Calls through DockerDriver._call.", ["operation"])
CALL_SECONDS = Histogram(
    "bench_docker_call_seconds",
    "Wall time of calls through DockerDriver._call (retries and the wait for a slot included).",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ECHOES = Counter("bench_ignored_echoes", "Docker events ignored as echoes of own actions.")
ECHO_OF = {
    "start": ("start",),
    "stop": ("kill", "die", "stop"),
    "remove": ("destroy",),
    "unpause": ("unpause",),
}
ECHO_WINDOW_S = 10.0


def count_docker_calls() -> None:
    original = DockerDriver._call

    async def counted(
        self: DockerDriver, operation: str, call: Callable[[], Awaitable[Any]], **kwargs: Any
    ) -> Any:
        CALLS.labels(operation).inc()
        began = time.monotonic()
        try:
            return await original(self, operation, call, **kwargs)
        finally:
            CALL_SECONDS.labels(operation).observe(time.monotonic() - began)

    DockerDriver._call = counted  # type: ignore[method-assign]


def ignore_own_events() -> None:
    expected: dict[tuple[str, str], float] = {}

    def remember(operation: str) -> None:
        original = getattr(DockerDriver, operation)

        async def acting(self: DockerDriver, container_id: str, *args: Any, **kwargs: Any) -> Any:
            until = time.monotonic() + ECHO_WINDOW_S
            for action in ECHO_OF[operation]:
                expected[(container_id, action)] = until
            return await original(self, container_id, *args, **kwargs)

        setattr(DockerDriver, operation, acting)

    for operation in ECHO_OF:
        remember(operation)

    subscribe = DockerEvents.subscribe

    def filtered(self: DockerEvents, *args: Any, **kwargs: Any) -> Any:
        subscriber = subscribe(self, *args, **kwargs)
        get = subscriber.get

        async def next_event() -> Any:
            while True:
                event = await get()
                if event is None:
                    return None
                key = (event.get("id", ""), event.get("Action", ""))
                until = expected.pop(key, None)
                if until is None or until < time.monotonic():
                    return event
                ECHOES.inc()

        subscriber.get = next_event
        return subscriber

    DockerEvents.subscribe = filtered  # type: ignore[method-assign]


def main() -> None:
    count_docker_calls()
    variants = {"ignore-own-events": ignore_own_events}
    for variant in filter(None, os.environ.get("BENCH_VARIANT", "").split(",")):
        variants[variant]()
    start_http_server(int(os.environ["BENCH_METRICS_PORT"]), addr="127.0.0.1")
    sys.exit(run(["operator"]))


if __name__ == "__main__":
    main()
