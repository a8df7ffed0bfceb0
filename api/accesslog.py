"""One structured line per API request, when its answer ends (`tether.api.requestrecord` writes
it): method, route template, status, duration, client address and the id of the token that made
it.

What is never logged: the path as sent (it may carry a query string with a secret in it; the
route template `/v1/projects/{name}/logs` says which route answered), the Authorization header, a
cookie, or a token. The token id is left by the authentication (`tether.api.auth`) in a holder
the middleware puts in the request's scope: a holder, since a middleware further in may copy the
scope (the console's session cookie does), and the copy shares it.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog
from starlette.types import Scope

# Through the standard library's logging, as uvicorn's access lines went: rendered like every
# other line by the servers' root handler (`tether.api.logconfig`), and silent in a process that
# configured no logging (an app served by tests: their output stays the CLI's).
_logger = logging.getLogger("tether.api.access")
# The two processors structlog's own loggers run on this line's way to the root handler's
# `ProcessorFormatter`, which renders it as structlog's lines are rendered.
_LEVEL = structlog.processors.add_log_level
_STAMP = structlog.processors.TimeStamper(fmt="iso", utc=True)
ACCESS_KEY = "tether.access"  # the scope's holder: {"token_id": ...} once authenticated


def note_token(scope: Scope, token_id: int | None) -> None:
    """Say, in the request's access line, which token made it."""
    holder: dict[str, Any] | None = scope.get(ACCESS_KEY)
    if holder is not None:
        holder["token_id"] = token_id


def log_request(
    *,
    method: str,
    route: str,
    status: int,
    duration_ms: float,
    client: str | None,
    token_id: int | None,
) -> None:
    """The access line of one request: what a structlog logger wrapping `_logger` would hand the
    root handler (`wrap_for_formatter`'s record), made directly. Once per request, that logger's
    per-call binding and the standard library's search of the caller's frame (for a file and
    line no formatter here shows) were most of what logging a request cost."""
    if not _logger.isEnabledFor(logging.INFO):
        return
    event: dict[str, Any] = {
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": duration_ms,
        "client": client,
        "token_id": token_id,
        "event": "request",
    }
    _STAMP(_logger, "info", _LEVEL(_logger, "info", event))
    record = _logger.makeRecord(
        _logger.name,
        logging.INFO,
        "(unknown file)",
        0,
        event,
        (),
        None,
        extra={"_logger": _logger, "_name": "info"},
    )
    _logger.handle(record)
