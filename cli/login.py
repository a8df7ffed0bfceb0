"""`tether login`: check a token against the API and save both in the config file."""

# No `from __future__ import annotations` in the command modules: typer would eval each
# annotation string on every run (~25 ms of a command's 150; see cli/options.py).

import sys
from typing import Annotated

import typer

from tether.cli import config
from tether.cli.errors import EXIT_USAGE, CliError
from tether.cli.options import invocation
from tether.cli.output import say

Url = Annotated[
    str | None, typer.Option("--url", help=f"The tether API, e.g. {config.DEFAULT_URL}.")
]
Token = Annotated[
    str | None,
    typer.Option("--token", help="An API token (asked for if omitted on a terminal)."),
]


def login(ctx: typer.Context, url: Url = None, token: Token = None) -> None:
    """Check a token against the API and save both in the config file (mode 0600)."""
    from tether.cli.client import ApiClient

    env = invocation(ctx).env
    path = config.config_path(env)
    try:
        saved_url = config.read_file(path).get("url")
    except CliError:
        saved_url = None  # a broken file is what login replaces
    url = config.check_url(url or env.get("TETHER_URL") or saved_url or config.DEFAULT_URL, "--url")
    if not token:
        if not sys.stdin.isatty():
            raise CliError("give the API token with --token TOKEN", exit_code=EXIT_USAGE)
        token = str(typer.prompt("API token", hide_input=True)).strip()
    settings = config.ClientConfig(url=url, token=token, timeout_s=config.timeout(env), path=path)
    with ApiClient(settings) as api:
        visible = api.get("/projects")
    config.save(path, url=url, token=token)
    say(f"logged in to {url} ({len(visible)} projects visible); saved to {path}")
    if env.get("TETHER_TOKEN") and env["TETHER_TOKEN"] != token:
        say("note: TETHER_TOKEN is set in this environment and overrides the saved token")
