"""One structured line per API request, when its answer ends: method, route template, status,
duration, client address and the id of the token that made it.

What is never logged: the path as sent (it may carry a query string with a secret in it; the
route template `/v1/projects/{name}/logs` says which route answered), the Authorization header, a
cookie, or a token. The token id is left by the authentication (`tether.api.auth`) in a holder
this middleware puts in the request's scope: a holder, since a middleware further in may copy the
scope (the console's session cookie does), and the copy shares it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.api.metrics import route_template

# Through the standard library's logging, as uvicorn's access lines went: rendered like every
# other line by the servers' root handler (`tether.api.logconfig`), and silent in a process that
# configured no logging (an app served by tests: their output stays the CLI's).
log = structlog.wrap_logger(
    logging.getLogger("tether.api.access"),
    processors=[
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    wrapper_class=structlog.stdlib.BoundLogger,
)
ACCESS_KEY = "tether.access"  # the scope's holder: {"token_id": ...} once authenticated


def note_token(scope: Scope, token_id: int | None) -> None:
    """Say, in the request's access line, which token made it."""
    holder: dict[str, Any] | None = scope.get(ACCESS_KEY)
    if holder is not None:
        holder["token_id"] = token_id


class AccessLog:
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

        async def noting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        finally:
            client = scope.get("client")
            log.info(
                "request",
                method=scope["method"],
                route=route_template(scope, self.routes()),
                status=status,
                duration_ms=round((time.perf_counter() - began) * 1000, 1),
                client=client[0] if client else None,
                token_id=holder["token_id"],
            )
