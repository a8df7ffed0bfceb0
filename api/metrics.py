"""The API's Prometheus metrics: requests by method, route and status, their latency, and the
watch streams open.

Labels stay bounded whatever clients send: the route is the path template a request matched
(`/v1/projects/{name}`, never the project's name), `unmatched` when none did, and a method that is
not a standard one is counted as `other`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from prometheus_client import Counter, Gauge, Histogram
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class RequestMetrics:
    """Counts every HTTP request the API answers; `routes` gives the app's routes."""

    def __init__(self, app: ASGIApp, routes: Callable[[], Sequence[BaseRoute]]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        method = scope["method"] if scope["method"] in METHODS else "other"
        counted = False

        def count(status: int) -> None:
            nonlocal counted
            counted = True
            route = route_template(scope, self.routes())
            API_REQUESTS.labels(method, route, str(status)).inc()
            API_REQUEST_SECONDS.labels(method, route).observe(time.perf_counter() - began)

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not counted:
                count(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if not counted:
                count(500)  # failed before answering: the server error handler answers 500
            raise
        # A request that got no answer at all (its client went away first) is not counted.
