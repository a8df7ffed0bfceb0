"""Failures of what the servers depend on (Postgres, Docker, the network), as one line each.

Each says what went wrong and what to do. asyncpg's errors are recognised by the store
(`tether.api.store.refusal`), the only place allowed to import asyncpg; the CLI words them.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

from tether.cli.errors import CliError


def redact(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password:
        return dsn.replace(f":{parts.password}@", ":***@", 1)
    return dsn


def reason(exc: BaseException) -> str:
    """Why `exc` happened, in a few words."""
    if isinstance(exc, OSError) and not isinstance(exc, socket.gaierror) and exc.errno:
        return os.strerror(exc.errno)  # without the address tuples asyncio adds
    text = str(getattr(exc, "message", "") or exc)
    return " ".join(text.split()) or type(exc).__name__


def database_problem(exc: BaseException, dsn: str) -> CliError | None:
    """The one-line explanation of a failure to use Postgres, or None if `exc` is something else."""
    from tether.api.errors import DatabaseRefused, Refusal, TetherError
    from tether.api.store import refusal

    where = redact(dsn)
    refused = exc if isinstance(exc, DatabaseRefused) else refusal(exc)
    if refused is not None:
        why = refused.message
        return CliError(
            {
                Refusal.NO_SCHEMA: f"the database at {where} has no tether schema ({why}); run "
                "`tether migrate`",
                Refusal.CREDENTIALS: f"Postgres at {where} refused the credentials ({why}); fix "
                "TETHER_DATABASE_URL",
                Refusal.NO_DATABASE: f"{why} on the Postgres server of {where}; create it, or fix "
                "TETHER_DATABASE_URL",
                Refusal.OTHER: f"Postgres at {where} failed: {why}",
            }[refused.refusal]
        )
    if isinstance(exc, TetherError):
        return CliError(f"{exc.message}; {exc.hint}" if exc.hint else exc.message)
    if isinstance(exc, OSError | TimeoutError):
        return CliError(
            f"cannot connect to Postgres at {where} ({reason(exc)}); start it (`tether up` runs "
            "one in Docker) or set TETHER_DATABASE_URL"
        )
    return None


@contextlib.contextmanager
def database(dsn: str) -> Iterator[None]:
    """Failures to use the Postgres at `dsn` within, as their one-line `CliError`."""
    try:
        yield
    except Exception as exc:
        problem = database_problem(exc, dsn)
        if problem is None:
            raise
        raise problem from exc


def part_failure(name: str, exc: BaseException, dsn: str) -> CliError:
    """A part of a server process (the API, the operator) ended with `exc`."""
    if isinstance(exc, CliError):
        return exc
    problem = database_problem(exc, dsn)
    why = problem.message if problem else f"{type(exc).__name__}: {reason(exc)}"
    return CliError(f"the {name} stopped: {why}")
