"""The server-side commands: `migrate`, `api`, `operator`, `up` and `token create`.

They read `TETHER_*` settings, not the CLI's config file, and import the server side (uvicorn, the
store, the operator) only when run, which keeps the client commands quick.
"""

# No `from __future__ import annotations` in the command modules: typer would eval each
# annotation string on every run (~25 ms of a command's 150; see cli/options.py).

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from tether.cli.options import (
    LogFormat,
    LogFormatOpt,
    LogLevel,
    LogLevelOpt,
    check_owner,
    invocation,
)

if TYPE_CHECKING:
    from tether.api.settings import Settings


def _server_settings(
    ctx: typer.Context, log_format: LogFormat | None, log_level: LogLevel | None
) -> "Settings":
    """The settings of a long-running server, its logs configured by them."""
    from tether.cli.settings import configure_logs, load_settings

    settings = load_settings(invocation(ctx).env, log_format=log_format, log_level=log_level)
    configure_logs(settings)
    return settings


def migrate(ctx: typer.Context) -> None:
    """Apply the pending database migrations (each once, safe to run concurrently)."""
    from tether.cli import database
    from tether.cli.settings import load_settings

    database.migrate(load_settings(invocation(ctx).env))


def api(ctx: typer.Context, log_format: LogFormatOpt = None, log_level: LogLevelOpt = None) -> None:
    """Serve the HTTP API on TETHER_API_HOST:TETHER_API_PORT (run `tether migrate` first)."""
    from tether.cli import server

    server.api(_server_settings(ctx, log_format, log_level))


def operator(
    ctx: typer.Context, log_format: LogFormatOpt = None, log_level: LogLevelOpt = None
) -> None:
    """Run the reconciler until SIGINT/SIGTERM, then drain and exit 0."""
    from tether.cli import server

    server.operator(_server_settings(ctx, log_format, log_level))


def proxy(
    ctx: typer.Context, log_format: LogFormatOpt = None, log_level: LogLevelOpt = None
) -> None:
    """Run the project endpoints' proxy (HAProxy) until SIGINT/SIGTERM; SIGHUP reloads it."""
    from tether.cli import proxy_server

    proxy_server.proxy(_server_settings(ctx, log_format, log_level))


def up(ctx: typer.Context, log_format: LogFormatOpt = None, log_level: LogLevelOpt = None) -> None:
    """Run tether on this machine: Postgres in Docker, the proxy, migrations, the API and the
    operator.

    Ctrl-C stops everything, including the Postgres container; its data stays in a volume.
    """
    from tether.cli import up as running

    running.up(_server_settings(ctx, log_format, log_level), invocation(ctx).env)


Owner = Annotated[
    str, typer.Option("--owner", help="Whose projects the token acts on.", callback=check_owner)
]
Admin = Annotated[bool, typer.Option("--admin", help="See and change every owner's projects.")]


def token_create(ctx: typer.Context, owner: Owner, admin: Admin = False) -> None:
    """Create an API token and print it (only once: it is stored hashed)."""
    from tether.cli import database
    from tether.cli.settings import load_settings

    token = database.create_token(load_settings(invocation(ctx).env), owner, admin=admin)
    sys.stdout.write(token + "\n")
    sys.stderr.write(
        f"created a{'n admin' if admin else ''} token for {owner}; it is shown only once. "
        "Use it with `tether login --token TOKEN` or TETHER_TOKEN\n"
    )
