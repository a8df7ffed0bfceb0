"""`tether operator`, exactly, plus what the benchmarks read from outside: Prometheus metrics on
127.0.0.1:$BENCH_METRICS_PORT (tether's own, and `bench_docker_calls_total`, which counts every
call through the Docker driver's single entry point, `DockerDriver._call`, and
`bench_docker_call_seconds`, their wall time).

Run as `python bench/operator_process.py` with the TETHER_* variables of `tether operator`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter, Histogram, start_http_server

from tether.cli.main import run
from tether.operator.engine.docker.driver import DockerDriver

CALLS = Counter("bench_docker_calls", "Calls through DockerDriver._call.", ["operation"])
CALL_SECONDS = Histogram(
    "bench_docker_call_seconds",
    "Wall time of calls through DockerDriver._call (retries and the wait for a slot included).",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


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


def main() -> None:
    count_docker_calls()
    start_http_server(int(os.environ["BENCH_METRICS_PORT"]), addr="127.0.0.1")
    sys.exit(run(["operator"]))


if __name__ == "__main__":
    main()
