"""Serving: the sockets of a server process, and the supervisor that runs its parts.

`tether api`, `tether operator` and `tether up` listen before anything else starts (a taken port
fails fast), then run the API and/or the operator under one `Stopper`: the first SIGINT or
SIGTERM stops every part, and the process exits 0 once they have drained; a part that ends on its
own stops the others, and the process fails with one line saying which part and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Generator
from typing import TYPE_CHECKING, TypeAlias

import structlog
import uvicorn
import uvloop

from tether.cli import database
from tether.cli.errors import EXIT_USAGE, CliError
from tether.cli.problems import database_problem, part_failure, reason
from tether.cli.readiness import OperatorReadiness
from tether.cli.settings import client_url, http_url
from tether.cli.signals import Stopper

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp

    from tether.api.logchannel import RemoteLogs
    from tether.api.logs import LogSource
    from tether.api.settings import Settings
    from tether.api.store import Store
    from tether.operator.engine.docker.archive import DockerArchives
    from tether.operator.engine.docker.logs import ContainerLogs
    from tether.operator.swarm.docker.logs import ServiceLogs

log = structlog.get_logger("tether.cli")
Parts: TypeAlias = "dict[asyncio.Task[None], str]"


def bind(
    host: str, port: int, variables: str = "TETHER_API_HOST / TETHER_API_PORT"
) -> socket.socket:
    """Listen before anything else starts, so that a taken port fails fast and clearly."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise CliError(
            f"cannot listen on {host}:{port} ({reason(exc)}); stop whatever uses it, or set "
            f"{variables}"
        ) from exc
    # asyncio sets TCP_NODELAY only on sockets it creates itself; accepted connections inherit
    # it from this one. Without it, h11's separate head and body writes wait on the client's
    # delayed ACK: ~40 ms added to every request (docs/benchmarks.md, API writes).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def bind_operator_endpoint(settings: Settings) -> socket.socket:
    return bind(
        settings.operator_host,
        settings.operator_port,
        "TETHER_OPERATOR_HOST / TETHER_OPERATOR_PORT",
    )


class _ApiServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The Stopper owns SIGINT/SIGTERM: the API and the operator stop together, and the process
        # exits 0 instead of re-raising the signal after shutdown as uvicorn does.
        yield


def _uvicorn(app: ASGIApp, settings: Settings) -> _ApiServer:
    return _ApiServer(
        uvicorn.Config(
            app,
            lifespan="off",
            log_level=settings.log_level,
            # uvicorn's lines go through the root logger, which `tether.api.logconfig` renders
            # as every other line; its access lines are replaced by `tether.api.accesslog`'s.
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=round(settings.api_grace_s),
        )
    )


def _run_server(
    parts: Parts, stopper: Stopper, server: _ApiServer, listening: socket.socket, name: str
) -> None:
    def stop_server(first: bool) -> None:
        server.should_exit = True
        server.force_exit = not first

    stopper.on_stop(stop_server)
    parts[asyncio.create_task(server.serve(sockets=[listening]))] = name


def bind_unix(path: str, variable: str) -> socket.socket:
    """Listen on a unix socket at `path` (a stale one left by a killed process is replaced)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        # Reachable by whoever mounts its directory (compose: the API's unprivileged user); the
        # log channel's secret, not the mode, decides who is served.
        os.chmod(path, 0o666)
        sock.listen(128)
    except OSError as exc:
        raise CliError(f"cannot listen on {path} ({reason(exc)}); check {variable}") from exc
    return sock


def _log_source(
    settings: Settings, *, with_operator: bool
) -> ContainerLogs | ServiceLogs | RemoteLogs:
    """Where the API reads container output (`tether logs`) from: the operator's log channel
    when one is configured (an API without Docker access: compose's), else Docker, through a
    driver of its own (also under `tether up`, where the operator is in the same process)."""
    if settings.logs_socket and not with_operator:
        from tether.api.logchannel import RemoteLogs

        return RemoteLogs(settings.logs_socket, settings.logs_secret)
    return _docker_logs(settings)


def _docker_logs(settings: Settings) -> ContainerLogs | ServiceLogs:
    from tether.operator.runtimes import log_source

    return log_source(settings)


def _archives(settings: Settings) -> DockerArchives:
    """The API reads and writes volumes (`tether volume export/import`) through a Docker driver
    of its own, like container output."""
    from tether.operator.engine.docker.archive import DockerArchives
    from tether.operator.engine.docker.driver import DockerDriver

    return DockerArchives(DockerDriver(settings.docker_url, settings.installation_id))


async def serve(
    settings: Settings,
    store: Store,
    stopper: Stopper,
    *,
    sock: socket.socket | None,
    with_operator: bool,
    operator_sock: socket.socket | None = None,
) -> None:
    """Serve the API (on `sock`) and/or the operator until a stop is requested or one fails.

    The operator's health and metrics endpoint is served on `operator_sock` (`tether operator`);
    with the API in the same process (`tether up`), the API's `/readyz` includes the operator's
    checks, and its `/metrics` the operator's metrics (one registry per process)."""
    from tether.api.probes import create_probe_app

    if settings.logs_socket and not settings.logs_secret:
        raise CliError(
            "TETHER_LOGS_SOCKET is set without TETHER_LOGS_SECRET: set both, the same in the API "
            "and the operator (e.g. a secret from `openssl rand -hex 32`)",
            exit_code=EXIT_USAGE,
        )
    parts: Parts = {}
    operator_checks = OperatorReadiness("operator." if sock is not None else "")
    log_source = _log_source(settings, with_operator=with_operator) if sock is not None else None
    channel = _serve_log_channel(settings, parts, stopper) if with_operator else None
    archives = _archives(settings) if sock is not None else None
    try:
        if sock is not None and log_source is not None and archives is not None:
            checks = [operator_checks] if with_operator else []
            app = _api_app(settings, store, log_source, archives, checks)
            # Open watch streams end at a stop: their clients reconnect.
            stopper.on_stop(lambda _first: app.state.watches.shutdown())
            _run_server(parts, stopper, _uvicorn(app, settings), sock, "API")
            parts[asyncio.create_task(_follow_revocations(store, stopper))] = (
                "token revocation listener"
            )
        if operator_sock is not None:
            probes = _uvicorn(create_probe_app([operator_checks]), settings)
            _run_server(parts, stopper, probes, operator_sock, "operator's endpoint")
        if with_operator:
            from tether.operator.serve import serve_operator

            operating = serve_operator(
                settings, store, stopper.event, on_start=operator_checks.started
            )
            parts[asyncio.create_task(operating)] = "operator"
        signalled, ended = await _supervise(parts, stopper)
    finally:
        for source in (log_source, channel, archives):
            if source is not None:
                await source.close()
    _raise_failure(parts, settings.database_url)
    if not signalled:
        raise CliError(f"the {ended[0]} stopped on its own; see the log above")


def _serve_log_channel(
    settings: Settings, parts: Parts, stopper: Stopper
) -> ContainerLogs | ServiceLogs | None:
    """The operator serves container output to API processes without Docker access on
    TETHER_LOGS_SOCKET (`tether.api.logchannel`): the source it reads, to close at the end."""
    if not settings.logs_socket:
        return None
    from tether.api.logchannel import create_channel_app

    sock = bind_unix(settings.logs_socket, "TETHER_LOGS_SOCKET")
    source = _docker_logs(settings)
    app = create_channel_app(source, settings.logs_secret)
    _run_server(parts, stopper, _uvicorn(app, settings), sock, "log channel")
    log.info("serving container output to the API", socket=settings.logs_socket)
    return source


async def _follow_revocations(store: Store, stopper: Stopper) -> None:
    from tether.api.revocations import RevocationListener

    await RevocationListener(store).run(stopper.event)


def _api_app(
    settings: Settings,
    store: Store,
    log_source: LogSource,
    archives: DockerArchives,
    readiness: list[OperatorReadiness],
) -> FastAPI:
    from tether.api.app import create_app
    from tether.api.ratelimit import FailureLimiter

    return create_app(
        store,
        max_body_bytes=settings.max_body_bytes,
        log_source=log_source,
        archives=archives,
        archive_limit=settings.volume_archive_max_bytes,
        keepalive_s=settings.stream_keepalive_s,
        session_ttl_s=settings.console_session_ttl_s,
        auth_limiter=FailureLimiter(settings.auth_failures, settings.auth_failure_window_s),
        readiness=list(readiness),
    )


async def _supervise(parts: Parts, stopper: Stopper) -> tuple[bool, list[str]]:
    """Wait for a stop or for one part to end (which stops the others); then for all of them.
    Whether a stop was asked for, and the parts that had ended before."""
    watch = asyncio.create_task(stopper.event.wait())
    await asyncio.wait([*parts, watch], return_when=asyncio.FIRST_COMPLETED)
    signalled = stopper.event.is_set()
    ended = [name for task, name in parts.items() if task.done()]
    if not signalled:
        stopper.request()  # one part ended on its own: stop the others too
    await asyncio.wait([*parts, watch])
    return signalled, ended


def _raise_failure(parts: Parts, dsn: str) -> None:
    for task, name in parts.items():
        exc = task.exception()
        if exc is None:
            continue
        if not isinstance(exc, CliError) and database_problem(exc, dsn) is None:
            log.error("server part failed", part=name, exc_info=exc)
        raise part_failure(name, exc, dsn) from exc


# The long-running commands but `up` (tether.cli.up): listen, connect, serve until stopped.


def api(settings: Settings) -> None:
    sock = bind(settings.api_host, settings.api_port)
    try:
        # uvloop: most of the API's CPU went to asyncio's socket reads and writes
        # (docs/benchmarks.md, item 6).
        uvloop.run(_api(settings, sock))
    finally:
        sock.close()


async def _api(settings: Settings, sock: socket.socket) -> None:
    from tether.api.migrator import pending

    dsn = settings.database_url
    try:
        missing = await pending(dsn)
    except Exception as exc:
        problem = database_problem(exc, dsn)
        if problem is None:
            raise
        log.warning(
            "database not reachable: the API answers 503 until it is", problem=problem.message
        )
    else:
        if missing:
            log.warning("migrations pending: run `tether migrate`", pending=len(missing))
    stopper = Stopper()
    with stopper.installed():
        store = await database.connect(settings)
        try:
            log.info(f"tether API on {client_url(settings)} (Ctrl-C stops it)")
            await serve(settings, store, stopper, sock=sock, with_operator=False)
        finally:
            await store.close()


def operator(settings: Settings) -> None:
    from tether.operator.serve import tune_garbage_collector

    tune_garbage_collector()
    sock = bind_operator_endpoint(settings)
    try:
        # uvloop, as the API: in a bulk of passes it cut the operator's CPU by a tenth
        # (stops) to a fifth (starts) against asyncio's own loop (docs/benchmarks.md, issue 15).
        uvloop.run(_operator(settings, sock))
    finally:
        sock.close()


async def _operator(settings: Settings, sock: socket.socket) -> None:
    stopper = Stopper()
    with stopper.installed():
        store = await database.connect(settings)
        try:
            host, port = sock.getsockname()[:2]
            log.info(f"tether operator: health and metrics on {http_url(host, port)}")
            await serve(settings, store, stopper, sock=None, with_operator=True, operator_sock=sock)
        finally:
            await store.close()
