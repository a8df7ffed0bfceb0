"""The server side of `tether`: migrate, api, operator, token create, and `up`, which runs it all.

Configuration comes from `TETHER_*` variables (`tether.api.settings.Settings`), read from the
environment `run()` was given; an invalid value is one line naming the variable, exit 2. Server
processes own SIGINT and SIGTERM: the first asks every part to stop and drain, and the process
exits 0 once they have.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from typing import TYPE_CHECKING, ClassVar, TypeVar
from urllib.parse import urlsplit

import structlog
import uvicorn
from pydantic import ValidationError

from tether.cli import config
from tether.cli.errors import EXIT_USAGE, CliError
from tether.cli.render import say

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from tether.api.migrator import Migration
    from tether.api.probes import Checks
    from tether.api.settings import Settings
    from tether.api.store import Store
    from tether.operator.engine.docker.postgres import PostgresServer
    from tether.operator.service import Operator

log = structlog.get_logger("tether.cli")
T = TypeVar("T")

POSTGRES_DEADLINE_S = 90.0
API_GRACE_S = 10
ADMIN_OWNER = "admin"
SIGNALS = (signal.SIGINT, signal.SIGTERM)


# Configuration


def load_settings(
    env: Mapping[str, str],
    *,
    log_format: str | None = None,
    log_level: str | None = None,
) -> Settings:
    """Settings from the `TETHER_*` variables of `env` (not of `os.environ`, so that `run()` is a
    function of its arguments); `--log-format` and `--log-level` override theirs.

    An invalid or empty variable is a usage error (exit 2) that names the variable, the value and
    the expected form; a variable that is not a setting but looks like one (a typo) is warned
    about, since it would otherwise be ignored without a trace."""
    from tether.api.settings import Settings, variable

    given = {key.upper(): value for key, value in env.items()}
    values = {
        field: given[variable(field)] for field in Settings.model_fields if variable(field) in given
    }
    if "docker_url" not in values and given.get("DOCKER_HOST"):
        values["docker_url"] = given["DOCKER_HOST"]
    if log_format is not None:
        values["log_format"] = log_format
    if log_level is not None:
        values["log_level"] = log_level
    for name in _lookalikes(given):
        sys.stderr.write(f"warning: {name}\n")
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise CliError(_settings_problem(exc, values), exit_code=EXIT_USAGE) from exc


def configure_logs(settings: Settings) -> None:
    """Structured logs for a long-running server (global: never for the short commands)."""
    from tether.api.logconfig import configure

    configure(settings.log_format, settings.log_level)


# TETHER_* variables read by something other than the servers' settings: the CLI's, and those of
# compose.yaml, the Dockerfile and the tests.
NOT_SETTINGS = frozenset(
    {
        "TETHER_URL",
        "TETHER_TOKEN",
        "TETHER_TIMEOUT",
        "TETHER_CONFIG",
        "TETHER_IMAGE",
        "TETHER_BASE_IMAGE",
        "TETHER_WHEELS",
        "TETHER_DB_PASSWORD",
        "TETHER_DB_PORT",
        "TETHER_TEST_DATABASE_URL",
    }
)


def _lookalikes(given: Mapping[str, str]) -> list[str]:
    """Warnings for TETHER_* variables that are no setting but close to one."""
    from tether.api.settings import Settings, variable

    known = [variable(field) for field in Settings.model_fields]
    found = []
    for name in sorted(given):
        if not name.startswith("TETHER_") or name in known or name in NOT_SETTINGS:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close:
            found.append(f"{name} is not a setting and is ignored; did you mean {close[0]}?")
    return found


def _settings_problem(exc: ValidationError, values: Mapping[str, str]) -> str:
    from tether.api.settings import expected_form, variable

    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        if field not in values:  # cannot happen with defaults for all: say what pydantic says
            problems.append(f"{variable(field)} is invalid: {error['msg']}")
            continue
        value = redact(values[field]) if field == "database_url" else values[field]
        what = "is empty" if not value.strip() else "is invalid"
        problems.append(f"{variable(field)}={value!r} {what}; expected {expected_form(field)}")
    return "; ".join(problems)


def client_url(settings: Settings) -> str:
    """The URL a client on this machine reaches the API at."""
    return _http_url(settings.api_host, settings.api_port)


def _http_url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


# Failures of the systems the servers depend on, as one line each


def redact(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password:
        return dsn.replace(f":{parts.password}@", ":***@", 1)
    return dsn


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, socket.gaierror) and exc.errno:
        return os.strerror(exc.errno)  # without the address tuples asyncio adds
    text = str(getattr(exc, "message", "") or exc)
    return " ".join(text.split()) or type(exc).__name__


def _raised_by(exc: BaseException, *packages: str) -> bool:
    # The CLI may not import asyncpg or aiodocker (import-linter contracts): their exceptions are
    # recognised by the package that defines them.
    return type(exc).__module__.partition(".")[0] in packages


def database_problem(exc: Exception, dsn: str) -> CliError | None:
    """The one-line explanation of a failure to use Postgres, or None if `exc` is something else."""
    from tether.api.errors import TetherError

    where = redact(dsn)
    if isinstance(exc, TetherError):
        return CliError(f"{exc.message}; {exc.hint}" if exc.hint else exc.message)
    if isinstance(exc, OSError | TimeoutError):
        return CliError(
            f"cannot connect to Postgres at {where} ({_reason(exc)}); start it (`tether up` runs "
            "one in Docker) or set TETHER_DATABASE_URL"
        )
    if not _raised_by(exc, "asyncpg"):
        return None
    kind = type(exc).__name__
    if kind == "UndefinedTableError":
        return CliError(
            f"the database at {where} has no tether schema ({_reason(exc)}); run `tether migrate`"
        )
    if kind in ("InvalidPasswordError", "InvalidAuthorizationSpecificationError"):
        return CliError(
            f"Postgres at {where} refused the credentials ({_reason(exc)}); fix TETHER_DATABASE_URL"
        )
    if kind == "InvalidCatalogNameError":
        return CliError(
            f"{_reason(exc)} on the Postgres server of {where}; create it, or fix "
            "TETHER_DATABASE_URL"
        )
    return CliError(f"Postgres at {where} failed: {kind}: {_reason(exc)}")


@contextlib.contextmanager
def database(dsn: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        problem = database_problem(exc, dsn)
        if problem is None:
            raise
        raise problem from exc


# Signals


class Interrupted(Exception):
    """A stop was requested while starting up."""


class Stopper:
    """Turns SIGINT and SIGTERM into one `event` that every part of a server process watches.

    The first signal asks for a clean stop; a second SIGINT or SIGTERM tells `on_stop` callbacks
    to give up waiting (uvicorn then drops open connections).
    """

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._callbacks: list[Callable[[bool], None]] = []

    def on_stop(self, callback: Callable[[bool], None]) -> None:
        self._callbacks.append(callback)
        if self.event.is_set():
            callback(True)

    def request(self) -> None:
        first = not self.event.is_set()
        self.event.set()
        for callback in self._callbacks:
            callback(first)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals only reach the main thread: nothing to install
            return
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self.request)
        try:
            yield
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)

    async def unless_stopped(self, awaitable: Awaitable[T]) -> T:
        """Await a startup step, or cancel it and raise `Interrupted` once a stop is requested."""
        step = asyncio.ensure_future(awaitable)
        stopped = asyncio.ensure_future(self.event.wait())
        try:
            await asyncio.wait({step, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await step
        if step.cancelled():
            raise Interrupted
        return step.result()


# The HTTP API under uvicorn


class _ApiServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The Stopper owns SIGINT/SIGTERM: the API and the operator stop together, and the process
        # exits 0 instead of re-raising the signal after shutdown as uvicorn does.
        yield


def bind(
    host: str, port: int, variables: str = "TETHER_API_HOST / TETHER_API_PORT"
) -> socket.socket:
    """Listen before anything else starts, so that a taken port fails fast and clearly."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise CliError(
            f"cannot listen on {host}:{port} ({_reason(exc)}); stop whatever uses it, or set "
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


class OperatorReadiness:
    """The operator's readiness checks (`tether.api.probes`): its Docker connection, its NOTIFY
    listener and its Docker events stream. A standby operator is ready too (it takes over when
    the active one dies): whether it is the active one is reported, not required.

    The operator is handed over by `serve_operator` once created (`started`)."""

    REQUIRED: ClassVar[dict[str, str]] = {
        "docker": "Docker does not answer",
        "notify_listener": "not listening for desired-state changes (reconnecting to Postgres)",
        "docker_events": "not following Docker's events (reconnecting)",
    }

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._operator: Operator | None = None

    def started(self, operator: Operator) -> None:
        self._operator = operator

    async def __call__(self, checks: Checks) -> None:
        from tether.api import probes

        if self._operator is None:
            for name in self.REQUIRED:
                checks.failed(self.prefix + name, "the operator has not started yet")
            return
        try:
            report = await probes.bounded(self._operator.readiness())
        except TimeoutError:
            report = {}
            why = f"the operator's checks did not answer within {probes.CHECK_TIMEOUT_S:g} s"
        except Exception as exc:  # a readiness probe reports failures, it does not raise them
            report = {}
            why = f"the operator's checks failed ({type(exc).__name__}: {_reason(exc)})"
        for name, problem in self.REQUIRED.items():
            if name not in report:
                checks.failed(self.prefix + name, why)
            elif report[name]:
                checks.passed(self.prefix + name)
            else:
                checks.failed(self.prefix + name, problem)
        if "active" in report:
            checks.note(self.prefix + "active", report["active"])
            try:  # which holder and epoch: reported, never required
                lease = await probes.bounded(self._operator.lease_info())
            except Exception:
                lease = {}
            for key, value in lease.items():
                checks.note(self.prefix + key, value)


def _uvicorn(app: ASGIApp, settings: Settings, *, access_log: bool = True) -> _ApiServer:
    return _ApiServer(
        uvicorn.Config(
            app,
            lifespan="off",
            log_level=settings.log_level,
            access_log=access_log,
            timeout_graceful_shutdown=API_GRACE_S,
        )
    )


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
    from tether.api.app import create_app
    from tether.api.probes import create_probe_app
    from tether.api.ratelimit import FailureLimiter
    from tether.operator.engine.docker.driver import DockerDriver
    from tether.operator.engine.docker.logs import ContainerLogs

    parts: dict[asyncio.Task[None], str] = {}
    operator_checks = OperatorReadiness("operator." if sock is not None else "")
    # The API reads container output (`tether logs`) through a Docker driver of its own.
    log_source = (
        ContainerLogs(
            DockerDriver(
                settings.docker_url,
                settings.installation_id,
                concurrency=settings.docker_concurrency,
            )
        )
        if sock is not None
        else None
    )

    def run(server: _ApiServer, listening: socket.socket, name: str) -> None:
        def stop_server(first: bool) -> None:
            server.should_exit = True
            server.force_exit = not first

        stopper.on_stop(stop_server)
        parts[asyncio.create_task(server.serve(sockets=[listening]))] = name

    if sock is not None:
        app = create_app(
            store,
            max_body_bytes=settings.max_body_bytes,
            log_source=log_source,
            auth_limiter=FailureLimiter(settings.auth_failures, settings.auth_failure_window_s),
            readiness=[operator_checks] if with_operator else [],
        )
        # Open watch streams end at a stop: their clients reconnect.
        stopper.on_stop(lambda _first: app.state.watches.shutdown())
        run(_uvicorn(app, settings), sock, "API")
    if operator_sock is not None:
        probes = create_probe_app([operator_checks])
        run(_uvicorn(probes, settings, access_log=False), operator_sock, "operator's endpoint")
    if with_operator:
        from tether.operator.serve import serve_operator

        operating = serve_operator(settings, store, stopper.event, on_start=operator_checks.started)
        parts[asyncio.create_task(operating)] = "operator"
    watch = asyncio.create_task(stopper.event.wait())
    try:
        await asyncio.wait([*parts, watch], return_when=asyncio.FIRST_COMPLETED)
        signalled = stopper.event.is_set()
        ended = [name for task, name in parts.items() if task.done()]
        if not signalled:
            stopper.request()  # one part ended on its own: stop the others too
        await asyncio.wait([*parts, watch])
    finally:
        if log_source is not None:
            await log_source.close()
    for task, name in parts.items():
        exc = task.exception()
        if exc is None:
            continue
        if isinstance(exc, CliError):
            raise exc
        problem = (
            database_problem(exc, settings.database_url) if isinstance(exc, Exception) else None
        )
        if problem is None:
            log.error("server part failed", part=name, exc_info=exc)
        why = problem.message if problem else f"{type(exc).__name__}: {_reason(exc)}"
        raise CliError(f"the {name} stopped: {why}") from exc
    if not signalled:
        raise CliError(f"the {ended[0]} stopped on its own; see the log above")


# Commands' bodies


def migrate(settings: Settings) -> None:
    from tether.api.migrator import available

    applied = asyncio.run(_migrate(settings.database_url))
    report_migrations(applied, len(available()), settings.database_url)


async def _migrate(dsn: str) -> list[Migration]:
    from tether.api.migrator import migrate as apply

    with database(dsn):
        return await apply(dsn)


def report_migrations(applied: list[Migration], total: int, dsn: str) -> None:
    for migration in applied:
        say(f"applied migration {migration.version:04d}_{migration.name}")
    if applied:
        say(f"database {redact(dsn)} is up to date ({total} migrations)")
    else:
        say(f"nothing to apply: database {redact(dsn)} is up to date ({total} migrations)")


def create_token(settings: Settings, owner: str, *, admin: bool) -> str:
    return asyncio.run(_create_token(settings, owner, admin))


async def _create_token(settings: Settings, owner: str, admin: bool) -> str:
    from tether.api.store import Store

    with database(settings.database_url):
        store = await Store.connect(settings.database_url, settings.ports)
        try:
            return await store.create_token(owner, admin=admin)
        finally:
            await store.close()


def api(settings: Settings) -> None:
    sock = bind(settings.api_host, settings.api_port)
    try:
        asyncio.run(_api(settings, sock))
    finally:
        sock.close()


async def _api(settings: Settings, sock: socket.socket) -> None:
    from tether.api.migrator import pending
    from tether.api.store import Store

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
        store = await Store.connect(dsn, settings.ports)
        try:
            say(f"tether API on {client_url(settings)} (Ctrl-C stops it)")
            await serve(settings, store, stopper, sock=sock, with_operator=False)
        finally:
            await store.close()


def operator(settings: Settings) -> None:
    from tether.operator.serve import tune_garbage_collector

    tune_garbage_collector()
    sock = bind_operator_endpoint(settings)
    try:
        asyncio.run(_operator(settings, sock))
    finally:
        sock.close()


async def _operator(settings: Settings, sock: socket.socket) -> None:
    from tether.api.store import Store

    stopper = Stopper()
    with stopper.installed():
        store = await Store.connect(settings.database_url, settings.ports)
        try:
            host, port = sock.getsockname()[:2]
            say(f"tether operator: health and metrics on {_http_url(host, port)}")
            await serve(settings, store, stopper, sock=None, with_operator=True, operator_sock=sock)
        finally:
            await store.close()


def up(settings: Settings, env: Mapping[str, str]) -> None:
    from tether.operator.serve import tune_garbage_collector

    tune_garbage_collector()
    sock = bind(settings.api_host, settings.api_port)
    try:
        asyncio.run(_up(settings, env, sock))
    finally:
        sock.close()


async def _up(settings: Settings, env: Mapping[str, str], sock: socket.socket) -> None:
    from tether.operator.engine.docker.postgres import PostgresServer

    postgres = PostgresServer(image=settings.postgres_image)
    # An explicit TETHER_DATABASE_URL means a Postgres of one's own: no container is managed.
    managed = not any(key.upper() == "TETHER_DATABASE_URL" for key in env)
    dsn = postgres.dsn if managed else settings.database_url
    settings = settings.model_copy(update={"database_url": dsn})
    stopper = Stopper()
    with stopper.installed():
        try:
            if managed:
                say(
                    f"starting Postgres: container {postgres.name} ({postgres.image}), data in "
                    f"volume {postgres.volume}, on 127.0.0.1:{postgres.host_port}"
                )
                try:
                    await stopper.unless_stopped(_ensure_postgres(settings.docker_url, postgres))
                except CliError:
                    managed = False  # it did not start: nothing to stop on the way out
                    raise
            else:
                say(f"using the Postgres at {redact(dsn)} (TETHER_DATABASE_URL)")
            await _run_up(settings, env, sock, stopper, postgres if managed else None)
        except Interrupted:
            say("interrupted while starting")
        except BaseException:
            if managed:  # best effort: the failure in flight is what gets reported
                problem = await _stop_postgres(settings.docker_url, postgres)
                if problem:
                    sys.stderr.write(f"warning: {problem}\n")
            raise
        if managed:  # still under the Stopper: another Ctrl-C does not interrupt this
            problem = await _stop_postgres(settings.docker_url, postgres)
            if problem:
                raise CliError(problem)
    say("tether stopped")


async def _run_up(
    settings: Settings,
    env: Mapping[str, str],
    sock: socket.socket,
    stopper: Stopper,
    postgres: PostgresServer | None,
) -> None:
    from tether.api.migrator import available
    from tether.api.store import Store

    dsn = settings.database_url
    store = await Store.connect(dsn, settings.ports)
    try:
        await stopper.unless_stopped(wait_for_postgres(store, dsn, POSTGRES_DEADLINE_S, postgres))
        applied = await stopper.unless_stopped(_migrate(dsn))
        report_migrations(applied, len(available()), dsn)
        fresh = any(m.version == 1 for m in applied)
        await stopper.unless_stopped(_log_in(store, settings, env, fresh=fresh))
        say(f"tether is up: API on {client_url(settings)}; Ctrl-C stops it and keeps the data")
        await serve(settings, store, stopper, sock=sock, with_operator=True)
    finally:
        await store.close()


async def wait_for_postgres(
    store: Store, dsn: str, deadline_s: float, postgres: PostgresServer | None
) -> None:
    """Poll a real connection until Postgres accepts it; give up at the deadline, or at once on
    an answer that waiting cannot fix (such as refused credentials)."""
    from tether.api.errors import StoreUnavailable

    loop = asyncio.get_running_loop()
    until = loop.time() + deadline_s
    delay = 0.05
    while True:
        with database(dsn):  # a failure that waiting cannot fix ends the wait at once
            try:
                await store.ping()
                return
            except StoreUnavailable as exc:
                if loop.time() + delay > until:
                    look = f"; see `docker logs {postgres.name}`" if postgres else ""
                    raise CliError(
                        f"Postgres at {redact(dsn)} did not accept connections within "
                        f"{deadline_s:g} s ({exc.message}){look}"
                    ) from exc
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def _log_in(store: Store, settings: Settings, env: Mapping[str, str], *, fresh: bool) -> None:
    """On a fresh database, create an admin token and log this machine's CLI in with it."""
    url = client_url(settings)
    path = config.config_path(env)
    try:
        saved = config.read_file(path)
    except CliError:
        saved = {}
    token = env.get("TETHER_TOKEN") or saved.get("token")
    if token and await store.authenticate(token) is not None:
        say(f"the CLI is logged in (config {path})")
        return
    if not fresh:
        say(
            f"log in with `tether login --url {url} --token TOKEN`; an admin creates tokens with "
            "`tether token create --owner NAME`"
        )
        return
    token = await store.create_token(ADMIN_OWNER, admin=True)
    config.save(path, url=url, token=token)
    say(f"created an admin token and logged the CLI in (saved to {path}); it is shown only once:")
    say(f"  {token}")
    say(f"elsewhere, log in with `tether login --url {url} --token TOKEN`")


async def _ensure_postgres(docker_url: str, postgres: PostgresServer) -> None:
    from tether.operator.engine.docker.faults import DockerFault
    from tether.operator.engine.docker.postgres import ensure_postgres

    try:
        await ensure_postgres(docker_url, postgres)
    except DockerFault as exc:
        raise CliError(str(exc)) from exc
    except Exception as exc:
        if isinstance(exc, OSError) or _raised_by(exc, "aiodocker", "aiohttp"):
            raise CliError(
                f"Docker at {docker_url} could not start Postgres ({_reason(exc)}); check that "
                "dockerd is running, or set TETHER_DOCKER_URL (or DOCKER_HOST)"
            ) from exc
        raise


async def _stop_postgres(docker_url: str, postgres: PostgresServer) -> str | None:
    """Stop the Postgres container, keeping its volume; say what failed, if anything."""
    from tether.operator.engine.docker.postgres import stop_postgres

    try:
        await stop_postgres(docker_url, postgres)
    except Exception as exc:
        if not (isinstance(exc, OSError) or _raised_by(exc, "aiodocker", "aiohttp")):
            raise
        if getattr(exc, "status", None) == 404:
            return None  # never created (startup failed before): nothing to stop
        return (
            f"could not stop the Postgres container {postgres.name} ({_reason(exc)}); stop it "
            f"with `docker stop {postgres.name}`"
        )
    say(f"stopped Postgres; its data is kept in volume {postgres.volume}")
    return None
