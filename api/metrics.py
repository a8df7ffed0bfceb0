"""The API's Prometheus metrics: requests by method, route and status, their latency, and the
watch streams open.

Labels stay bounded whatever clients send: the route is the path template a request matched
(`/v1/projects/{name}`, never the project's name), `unmatched` when none did, and a method that is
not a standard one is counted as `other`.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

API_REQUESTS = Counter(
    "tether_api_requests",
    "API requests by method, route template and status code (counted when the answer starts).",
    ["method", "route", "status"],
)
API_REQUEST_SECONDS = Histogram(
    "tether_api_request_duration_seconds",
    "From a request's arrival to the start of its answer (for streams: until they start).",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_WATCHERS = Gauge("tether_api_watchers", "Watch streams (server-sent events) open now.")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The path template of the route `scope` matched, or `unmatched`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    # Answered before routing (a body over the limit), or by the router itself (404, 405).
    partial = None
    for candidate in routes:
        match, _ = candidate.matches(scope)
        if match == Match.FULL:
            return str(getattr(candidate, "path", UNMATCHED))
        if match == Match.PARTIAL and partial is None:
            partial = candidate  # the path matches, not the method
    return str(getattr(partial, "path", UNMATCHED)) if partial is not None else UNMATCHED


# Each label set's children, looked up once: `labels()` validates and locks on every call.
_COUNTERS: dict[tuple[str, str, str], Counter] = {}
_TIMERS: dict[tuple[str, str], Histogram] = {}


def count_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one request whose answer started after `seconds` (`route` from `route_template`)."""
    method = method if method in METHODS else "other"
    key = (method, route, str(status))
    counter = _COUNTERS.get(key)
    if counter is None:
        counter = _COUNTERS[key] = API_REQUESTS.labels(*key)
    counter.inc()
    timer = _TIMERS.get(key[:2])
    if timer is None:
        timer = _TIMERS[key[:2]] = API_REQUEST_SECONDS.labels(method, route)
    timer.observe(seconds)
