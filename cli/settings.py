"""The servers' settings, read from `TETHER_*` variables and checked before anything starts.

An invalid or empty value is a usage error (exit 2) naming the variable, the value and the form
expected; a variable that looks like a misspelt setting is warned about.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tether.cli.errors import EXIT_USAGE, CliError
from tether.cli.problems import redact

if TYPE_CHECKING:
    from pydantic import ValidationError

    from tether.api.settings import Settings

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
    from pydantic import ValidationError

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
        value = values[field]
        if field == "database_url":
            value = redact(value)
        elif field == "logs_secret":
            value = "*" * min(len(value), 8)  # never shown back, even when refused
        what = "is empty" if not value.strip() else "is invalid"
        problems.append(f"{variable(field)}={value!r} {what}; expected {expected_form(field)}")
    return "; ".join(problems)


def client_url(settings: Settings) -> str:
    """The URL a client on this machine reaches the API at."""
    return http_url(settings.api_host, settings.api_port)


def http_url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
