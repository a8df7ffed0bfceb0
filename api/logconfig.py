"""Structured logs for the servers: JSON lines when not on a TTY, readable console output on one.

Every line a server writes goes through the same processors and renderer: structlog's own, and
every standard-library record (uvicorn's start-up and shutdown lines, asyncio's, any library's),
which a `ProcessorFormatter` on the root logger renders the same way. uvicorn's access lines are
replaced by tether's own (`tether.api.accesslog`), which never show a query string or a token.
"""

from __future__ import annotations

import logging
import sys

import structlog

# Added to every line, whoever logs it.
_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure(log_format: str = "auto", level: str = "info") -> None:
    """`log_format` is json, console or auto (console on a TTY, else JSON)."""
    console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    threshold = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*_SHARED, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(threshold)
    # httpx logs each request's full URL at INFO: a webhook's URL may carry a secret in its query.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(threshold, logging.WARNING))
