"""The `tether` command: sets desired state through the HTTP API, shows it, and runs the servers.

`run(argv, env)` is the whole CLI as a function (tests call it in-process); `main()` only hands it
`sys.argv` and `os.environ`. Exit codes: 0 success; 1 a failure (API, network, database, Docker),
reported as one line on stderr saying what went wrong and what to do; 2 a bad command line or
configuration value.

The commands live by job: `writes` (desired-state writes), `reads` (state, history, output),
`login`, `server_commands` (the servers and the database). Each imports what it needs when it
runs, so that `tether --help` and one request cost little more than Python's start
(docs/benchmarks.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import typer

from tether.cli import archives, login, reads, server_commands, webhooks, writes
from tether.cli.errors import EXIT_FAILURE, EXIT_USAGE, CliError
from tether.cli.options import Invocation

EXIT_INTERRUPTED = 130


def _help_without_command(ctx: typer.Context) -> None:
    """A group run without a command shows its help and exits 2, like any incomplete command."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(EXIT_USAGE)


def _group(help_text: str) -> typer.Typer:
    return typer.Typer(
        help=help_text,
        callback=_help_without_command,
        invoke_without_command=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # click's plain help: typer's rich help imports rich's markdown and pygments, ~300 ms
        # for a `--help` that must answer in 150 ms (docs/benchmarks.md, CLI).
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


ROOT_HELP = "Keep Docker-hosted projects in the state you asked for."
app = _group(ROOT_HELP)
projects_app = _group("Create and list projects.")
token_app = _group("Create, list and revoke API tokens (needs the database).")
volume_app = _group("Back up and restore a project's volumes (the project stopped).")
app.add_typer(projects_app, name="projects")
app.add_typer(token_app, name="token")
app.add_typer(volume_app, name="volume")
webhook_app = _group("Signed webhooks for your projects' events, and their deliveries.")
app.add_typer(webhook_app, name="webhook")

# In the order `tether --help` lists them.
for name, command in (
    ("start", writes.start),
    ("stop", writes.stop),
    ("restart", writes.restart),
    ("destroy", writes.destroy),
    ("rollback", writes.rollback),
    ("deploy", writes.deploy),
    ("status", reads.status),
    ("deployments", reads.deployments),
    ("volumes", reads.volumes),
    ("events", reads.events),
    ("watch", reads.watch),
    ("logs", reads.logs),
    ("nodes", reads.nodes),
    ("login", login.login),
    ("migrate", server_commands.migrate),
    ("api", server_commands.api),
    ("operator", server_commands.operator),
    ("proxy", server_commands.proxy),
    ("up", server_commands.up),
):
    app.command(name)(command)
projects_app.command("create")(writes.projects_create)
projects_app.command("list")(reads.projects_list)
token_app.command("create")(server_commands.token_create)
token_app.command("list")(server_commands.token_list)
token_app.command("revoke")(server_commands.token_revoke)
volume_app.command("export")(archives.export)
volume_app.command("import")(archives.import_)
webhook_app.command("add")(webhooks.add)
webhook_app.command("list")(webhooks.list_)
webhook_app.command("remove")(webhooks.remove)
webhook_app.command("deliveries")(webhooks.deliveries)


@runtime_checkable
class _CommandLineError(Protocol):
    """How click (vendored by typer) reports a bad command line: UsageError, BadParameter, ..."""

    exit_code: int

    def format_message(self) -> str: ...


def _fail(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def _app_for(argv: Sequence[str]) -> typer.Typer:
    """The app with only the command (or group) that `argv` names, else the whole app.

    typer builds a click command from each function's signature (~10 ms for all of them); one
    command line runs one command. `tether --help`, and a name that is no command (so that click
    suggests the nearest), get them all.
    """
    first = argv[0] if argv else None
    commands = [info for info in app.registered_commands if info.name == first]
    groups = [info for info in app.registered_groups if info.name == first]
    if not commands and not groups:
        return app
    narrow = _group(ROOT_HELP)
    narrow.registered_commands, narrow.registered_groups = commands, groups
    return narrow


def run(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run `tether` with these arguments and environment; return the exit code."""
    invocation = Invocation(env=dict(os.environ) if env is None else env)
    command = typer.main.get_command(_app_for(argv))
    try:
        code = command.main(
            args=list(argv), prog_name="tether", standalone_mode=False, obj=invocation
        )
    except CliError as exc:
        _fail(exc.message)
        return exc.exit_code
    except typer.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            _fail("interrupted")
            return EXIT_INTERRUPTED
        _fail("aborted")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _fail("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if not isinstance(exc, _CommandLineError):
            raise
        where = getattr(getattr(exc, "ctx", None), "command_path", None) or "tether"
        _fail(f"{' '.join(exc.format_message().split())} (see `{where} --help`)")
        return exc.exit_code
    return code if isinstance(code, int) else 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))
