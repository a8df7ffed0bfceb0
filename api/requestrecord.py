"""What every HTTP request leaves behind, from one middleware: its access line
(`tether.api.accesslog`) and its metrics (`tether.api.metrics`).

One middleware rather than two: one wrapped `send`, one look-up of the route template, and the
clock read once when the request arrives, once when its answer starts (the metrics' latency) and
once when it ends (the access line's duration).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.api.accesslog import ACCESS_KEY, log_request
from tether.api.metrics import count_request, route_template


class RequestRecord:
    """Logs and counts every HTTP request the API answers; `routes` gives the app's routes."""

    def __init__(self, app: ASGIApp, routes: Callable[[], Sequence[BaseRoute]]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        holder: dict[str, Any] = {"token_id": None}
        scope[ACCESS_KEY] = holder
        status = 500  # what the server error handler answers if the app fails before answering
        route: str | None = None

        async def noting_send(message: Message) -> None:
            nonlocal status, route
            if route is None and message["type"] == "http.response.start":
                status = int(message["status"])
                route = route_template(scope, self.routes())
                count_request(scope["method"], route, status, time.perf_counter() - began)
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        except Exception:
            if route is None:  # failed before answering: the server error handler answers 500
                route = route_template(scope, self.routes())
                count_request(scope["method"], route, status, time.perf_counter() - began)
            raise
        finally:
            # A request that got no answer at all (its client went away first) is logged, not
            # counted.
            client = scope.get("client")
            log_request(
                method=scope["method"],
                route=route if route is not None else route_template(scope, self.routes()),
                status=status,
                duration_ms=round((time.perf_counter() - began) * 1000, 1),
                client=client[0] if client else None,
                token_id=holder["token_id"],
            )
