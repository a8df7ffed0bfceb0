"""The Postgres of `tether up`: a container of its own, started, awaited and stopped.

The container helpers are the Docker driver's (`tether.operator.engine.docker`, the only code that
talks to Docker); this module says what their failures mean, and waits for Postgres to answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from tether.cli.errors import CliError
from tether.cli.output import say
from tether.cli.problems import database, reason, redact

if TYPE_CHECKING:
    from tether.api.store import Store
    from tether.operator.engine.docker.postgres import PostgresServer

DEADLINE_S = 90.0
log = structlog.get_logger("tether.cli")


def _docker_failure(exc: BaseException) -> bool:
    # The CLI may not import aiodocker (import-linter contracts): its failures, and those of
    # aiohttp under it, are recognised by the package that defines them.
    return isinstance(exc, OSError) or type(exc).__module__.partition(".")[0] in (
        "aiodocker",
        "aiohttp",
    )


async def ensure(docker_url: str, postgres: PostgresServer) -> None:
    from tether.operator.engine.docker.faults import DockerFault
    from tether.operator.engine.docker.postgres import ensure_postgres

    try:
        await ensure_postgres(docker_url, postgres)
    except DockerFault as exc:
        raise CliError(str(exc)) from exc
    except Exception as exc:
        if _docker_failure(exc):
            raise CliError(
                f"Docker at {docker_url} could not start Postgres ({reason(exc)}); check that "
                "dockerd is running, or set TETHER_DOCKER_URL (or DOCKER_HOST)"
            ) from exc
        raise


async def stop(docker_url: str, postgres: PostgresServer) -> str | None:
    """Stop the Postgres container, keeping its volume; say what failed, if anything."""
    from tether.operator.engine.docker.postgres import stop_postgres

    try:
        await stop_postgres(docker_url, postgres)
    except Exception as exc:
        if not _docker_failure(exc):
            raise
        if getattr(exc, "status", None) == 404:
            return None  # never created (startup failed before): nothing to stop
        return (
            f"could not stop the Postgres container {postgres.name} ({reason(exc)}); stop it "
            f"with `docker stop {postgres.name}`"
        )
    say(f"stopped Postgres; its data is kept in volume {postgres.volume}")
    return None


async def wait_until_up(
    store: Store, dsn: str, deadline_s: float, postgres: PostgresServer | None
) -> None:
    """Try a real connection until Postgres accepts it; give up at the deadline, or at once on
    an answer that waiting cannot fix (such as refused credentials)."""
    from tether.api.errors import StoreUnavailable
    from tether.api.reconnect import Backoff, GaveUp, Reconnect

    waiting = Reconnect(
        f"Postgres at {redact(dsn)}",
        retry_on=(StoreUnavailable,),
        backoff=Backoff(first_s=0.05, max_s=1.0),
        give_up_after_s=deadline_s,
        # Not up yet is what is awaited: worth a line at debug level only.
        on_failure=lambda failure, delay_s: log.debug(
            "postgres not up yet", error=str(failure), delay_s=round(delay_s, 2)
        ),
    )
    with database(dsn):  # a failure that waiting cannot fix ends the wait at once
        try:
            await waiting.until_done(store.ping)
        except GaveUp as exc:
            look = f"; see `docker logs {postgres.name}`" if postgres else ""
            why = exc.last.message if isinstance(exc.last, StoreUnavailable) else str(exc.last)
            raise CliError(
                f"Postgres at {redact(dsn)} did not accept connections within "
                f"{deadline_s:g} s ({why}){look}"
            ) from exc.last
