"""What the commands share: the invocation they run in, and their arguments' types.

Everything here is cheap to import (typer and the standard library only): `tether --help` and the
one-request commands import no more than they use (docs/benchmarks.md). The command modules
(writes, reads, login, server_commands) leave their annotations unstringified, so that typer
reads them as they are instead of evaluating each one as a string on every run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from tether.api.vocabulary import PROJECT_NAME_PATTERN
from tether.cli import config
from tether.cli.output import Output

if TYPE_CHECKING:
    from tether.cli.client import ApiClient


@dataclass(frozen=True)
class Invocation:
    """What one invocation runs against: its environment (TETHER_*, config file location)."""

    env: Mapping[str, str]

    def client(self) -> ApiClient:
        from tether.cli.client import ApiClient

        return ApiClient(config.load(self.env))

    def config(self) -> config.ClientConfig:
        return config.load(self.env)


def invocation(ctx: typer.Context) -> Invocation:
    found = ctx.find_object(Invocation)
    assert found is not None, "run() passes an Invocation as the context object"
    return found


def _check_label(value: str, what: str) -> str:
    if not re.fullmatch(PROJECT_NAME_PATTERN, value):
        raise typer.BadParameter(
            f"{value!r} is not {what}: use a lowercase letter, then up to 62 of a-z, 0-9 or '-'"
        )
    return value


def check_name(value: str | None) -> str | None:
    return None if value is None else _check_label(value, "a project name")


def check_owner(value: str) -> str:
    return _check_label(value, "an owner name")


DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION_S = 100 * 365 * 86400


def duration_s(text: str) -> float | None:
    """Seconds of a duration written as a number and a unit (s, m, h, d, w: 30s, 1.5h, 30d), or
    None if `text` is not one."""
    match = DURATION.fullmatch(text.strip())
    return float(match[1]) * DURATION_UNITS[match[2]] if match else None


def parse_duration(value: str) -> float:
    """`--expires-in`: a duration above 0, at most 100 years."""
    seconds = duration_s(value)
    if seconds is None or not 0 < seconds <= MAX_DURATION_S:
        raise typer.BadParameter(
            f"{value!r} is not a duration: use a number above 0 and a unit, s m h d or w "
            "(e.g. 30d, 12h), at most 100 years"
        )
    return seconds


def check_wait(wait: bool, timeout: float | None) -> None:
    if timeout is not None and not wait:
        raise typer.BadParameter("--timeout goes with --wait", param_hint="'--timeout'")


Name = Annotated[str, typer.Argument(help="The project name.", callback=check_name)]
OutputOpt = Annotated[
    Output,
    typer.Option(
        "--output", "-o", help="table for people, json for programs.", case_sensitive=False
    ),
]
IfMatch = Annotated[
    int | None,
    typer.Option(
        "--if-match",
        metavar="GEN",
        min=0,
        help="Only if the project is still at this generation (else refused, nothing changed).",
    ),
]
Wait = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="Then watch the project until it is as asked: exit 0 when it is, 1 when it stalls "
        "or its rollout fails, 2 after --timeout (see `tether watch`).",
    ),
]
Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="S",
        min=0,
        help="Stop waiting after S seconds and exit 2 (default: wait as long as it takes).",
    ),
]


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


LogFormatOpt = Annotated[
    LogFormat | None,
    typer.Option("--log-format", help="Log lines as json or console (default: TETHER_LOG_FORMAT)."),
]
LogLevelOpt = Annotated[
    LogLevel | None,
    typer.Option("--log-level", help="Lowest level logged (default: TETHER_LOG_LEVEL)."),
]
