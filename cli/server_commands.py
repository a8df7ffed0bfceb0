"""The server-side commands: `migrate`, `api`, `operator`, `up` and `token create|list|revoke`.

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
    OutputOpt,
    check_owner,
    invocation,
    parse_duration,
)
from tether.cli.output import Output, print_json, say

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
ReadOnly = Annotated[
    bool, typer.Option("--read-only", help="Only read and watch: every write is refused (403).")
]
ExpiresIn = Annotated[
    float | None,
    typer.Option(
        "--expires-in",
        metavar="DURATION",
        parser=parse_duration,
        help="Refused after this long: a whole number and a unit, s m h d or w, e.g. 30d "
        "(default: never).",
    ),
]


def token_create(
    ctx: typer.Context,
    owner: Owner,
    admin: Admin = False,
    read_only: ReadOnly = False,
    expires_in: ExpiresIn = None,
) -> None:
    """Create an API token and print it (only once: it is stored hashed)."""
    from tether.cli import database
    from tether.cli.settings import load_settings

    new = database.create_token(
        load_settings(invocation(ctx).env),
        owner,
        admin=admin,
        read_only=read_only,
        expires_in_s=expires_in,
    )
    sys.stdout.write(new.token + "\n")
    kind = " ".join(k for k, on in (("read-only", read_only), ("admin", admin)) if on)
    expiry = f", expiring {new.expires_at:%Y-%m-%d %H:%M:%S} UTC" if new.expires_at else ""
    sys.stderr.write(
        f"created {kind + ' ' if kind else ''}token {new.id} for {owner}{expiry}; it is shown "
        "only once. Use it with `tether login --token TOKEN` or TETHER_TOKEN\n"
    )


def token_list(ctx: typer.Context, output: OutputOpt = Output.TABLE) -> None:
    """List the API tokens: id, owner, kind, created, last used, expires (never the tokens)."""
    from tether.cli import database
    from tether.cli.settings import load_settings

    tokens = database.list_tokens(load_settings(invocation(ctx).env))
    if output is Output.JSON:
        print_json([t.model_dump(mode="json") for t in tokens])
        return
    from tether.cli import render

    render.tokens_table(tokens)


TokenId = Annotated[int, typer.Argument(help="The token's id (see `tether token list`).", min=1)]


def token_revoke(ctx: typer.Context, token_id: TokenId) -> None:
    """Revoke an API token: every API server refuses it from now on (within 5 s at worst)."""
    from tether.cli import database
    from tether.cli.settings import load_settings

    revoked_at = database.revoke_token(load_settings(invocation(ctx).env), token_id)
    say(
        f"token {token_id} revoked at {revoked_at:%Y-%m-%d %H:%M:%S} UTC: it is refused from now on"
    )
