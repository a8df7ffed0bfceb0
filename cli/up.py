"""`tether up`: everything on this machine in one process.

Postgres in a container of its own (unless TETHER_DATABASE_URL names one), the migrations, an
admin token for this machine's CLI on a fresh database, then the API and the operator together.
Ctrl-C stops everything, the Postgres container included; its data stays in a volume.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog
import uvloop

from tether.cli import config, postgres
from tether.cli.database import apply_migrations, connect, report_migrations
from tether.cli.errors import CliError
from tether.cli.output import say
from tether.cli.problems import redact
from tether.cli.proxy_server import running_proxy
from tether.cli.server import bind, serve
from tether.cli.settings import client_url
from tether.cli.signals import Interrupted, Stopper

if TYPE_CHECKING:
    from tether.api.settings import Settings
    from tether.api.store import Store
    from tether.operator.engine.docker.postgres import PostgresServer

ADMIN_OWNER = "admin"
log = structlog.get_logger("tether.cli")


def up(settings: Settings, env: Mapping[str, str]) -> None:
    from tether.operator.serve import tune_garbage_collector

    tune_garbage_collector()
    sock = bind(settings.api_host, settings.api_port)
    try:
        # uvloop: the loop of the API and of the operator (tether.cli.server says why)
        uvloop.run(_up(settings, env, sock))
    finally:
        sock.close()


async def _up(settings: Settings, env: Mapping[str, str], sock: socket.socket) -> None:
    from tether.operator.engine.docker.postgres import PostgresServer

    server = PostgresServer(image=settings.postgres_image)
    # An explicit TETHER_DATABASE_URL means a Postgres of one's own: no container is managed.
    managed = not any(key.upper() == "TETHER_DATABASE_URL" for key in env)
    dsn = server.dsn if managed else settings.database_url
    settings = settings.model_copy(update={"database_url": dsn})
    stopper = Stopper()
    with stopper.installed():
        try:
            if managed:
                try:
                    await _start_postgres(settings, server, stopper)
                except CliError:
                    managed = False  # it did not start: nothing to stop on the way out
                    raise
            else:
                log.info(f"using the Postgres at {redact(dsn)} (TETHER_DATABASE_URL)")
            async with running_proxy(settings):  # the project endpoints' proxy (HAProxy)
                await _run_up(settings, env, sock, stopper, server if managed else None)
        except Interrupted:
            log.info("interrupted while starting")
        except BaseException:
            if managed:  # best effort: the failure in flight is what gets reported
                problem = await postgres.stop(settings.docker_url, server)
                if problem:
                    sys.stderr.write(f"warning: {problem}\n")
            raise
        if managed:  # still under the Stopper: another Ctrl-C does not interrupt this
            problem = await postgres.stop(settings.docker_url, server)
            if problem:
                raise CliError(problem)
    log.info("tether stopped")


async def _start_postgres(settings: Settings, server: PostgresServer, stopper: Stopper) -> None:
    log.info(
        f"starting Postgres: container {server.name} ({server.image}), data in "
        f"volume {server.volume}, on 127.0.0.1:{server.host_port}"
    )
    await stopper.unless_stopped(postgres.ensure(settings.docker_url, server))


async def _run_up(
    settings: Settings,
    env: Mapping[str, str],
    sock: socket.socket,
    stopper: Stopper,
    server: PostgresServer | None,
) -> None:
    from tether.api.migrator import available

    dsn = settings.database_url
    store = await connect(settings, dsn)
    try:
        await stopper.unless_stopped(
            postgres.wait_until_up(store, dsn, postgres.DEADLINE_S, server)
        )
        applied = await stopper.unless_stopped(apply_migrations(dsn))
        report_migrations(applied, len(available()), dsn)
        fresh = any(m.version == 1 for m in applied)
        await stopper.unless_stopped(_log_in(store, settings, env, fresh=fresh))
        log.info(f"tether is up: API on {client_url(settings)}; Ctrl-C stops it and keeps the data")
        await serve(settings, store, stopper, sock=sock, with_operator=True)
    finally:
        await store.close()


async def _log_in(store: Store, settings: Settings, env: Mapping[str, str], *, fresh: bool) -> None:
    """On a fresh database, create an admin token and log this machine's CLI in with it."""
    from tether.api.models import Principal

    url = client_url(settings)
    path = config.config_path(env)
    try:
        saved = config.read_file(path)
    except CliError:
        saved = {}
    token = env.get("TETHER_TOKEN") or saved.get("token")
    if token and isinstance(await store.authenticate(token), Principal):
        log.info(f"the CLI is logged in (config {path})")
        return
    if not fresh:
        log.info(
            f"log in with `tether login --url {url} --token TOKEN`; an admin creates tokens with "
            "`tether token create --owner NAME`"
        )
        return
    token = await store.create_token(ADMIN_OWNER, admin=True)
    config.save(path, url=url, token=token)
    # The one time a server prints a token: on standard output, for the person who ran `up` (the
    # log lines, on standard error, never show it).
    say(f"created an admin token and logged the CLI in (saved to {path}); it is shown only once:")
    say(f"  {token}")
    say(f"elsewhere, log in with `tether login --url {url} --token TOKEN`")
