"""The operator's Prometheus metrics. The same outcomes as the `pass` log lines and the events."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PASSES = Counter("tether_passes", "Reconcile passes by result.", ["result"])
PASS_SECONDS = Histogram(
    "tether_pass_duration_seconds",
    "Duration of one reconcile pass.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONVERGENCE_SECONDS = Histogram(
    "tether_convergence_seconds",
    "From a desired change to its project converged (Ready, or stopped as desired).",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
RETRIES = Counter("tether_retries", "Passes that failed and were scheduled again with backoff.")
DOCKER_CALLS = Counter(
    "tether_docker_calls", "Docker API calls by operation and outcome.", ["operation", "status"]
)
QUEUE_DEPTH = Gauge("tether_queue_depth", "Projects waiting for a reconcile pass.")
PROJECTS = Gauge("tether_projects", "Projects by phase, as of the last resync.", ["phase"])
PROXY_CALLS = Counter(
    "tether_proxy_calls",
    "Calls to the proxy's admin socket by operation and outcome (ok, refused, unreachable).",
    ["operation", "status"],
)
PROXY_CALL_SECONDS = Histogram(
    "tether_proxy_call_seconds",
    "Duration of one call to the proxy's admin socket, retries included.",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 15),
)
OPERATOR_ACTIVE = Gauge(
    "tether_operator_active", "1 while this operator holds the lease and may act, else 0."
)
LEASE_EPOCH = Gauge(
    "tether_lease_epoch",
    "The lease epoch this operator last acquired (its fencing token); 0 before the first.",
)
