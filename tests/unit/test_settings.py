"""Configuration: every setting is a TETHER_* variable with a row in the README's table, and an
invalid or empty one stops every server command at start (exit 2, before anything is contacted)
with one line naming the variable, the value and the expected form."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tether.api.settings import Settings, expected_form, variable
from tether.cli.main import run

README = Path(__file__).parents[2] / "README.md"
SERVER_COMMANDS = [["migrate"], ["api"], ["operator"], ["up"], ["token", "create", "--owner", "x"]]


def readme_variables() -> dict[str, str]:
    """The configuration table of the README: variable → default column."""
    text = README.read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(TETHER_[A-Z_]+)` \| (.*?) \|", section, flags=re.MULTILINE)
    return dict(rows)


def test_every_setting_has_a_row_in_the_readme_and_every_row_a_setting() -> None:
    documented = readme_variables()
    assert set(documented) == {variable(field) for field in Settings.model_fields}


def test_the_readme_shows_the_defaults() -> None:
    documented = readme_variables()
    defaults = Settings.model_construct()
    for field, info in Settings.model_fields.items():
        if info.default_factory is not None:
            continue  # computed (TETHER_DOCKER_URL: DOCKER_HOST, else the socket)
        value = getattr(defaults, field)
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        assert f"`{shown}`" in documented[variable(field)], field


def start(
    capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str]
) -> tuple[int, str]:
    capsys.readouterr()
    code = run(argv, {"TETHER_CONFIG": "/nonexistent/tether.json", **env})
    _out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, err


# (variable, value, a fragment of the expected form)
INVALID = [
    ("TETHER_DATABASE_URL", "mysql://db", "a postgresql:// URL"),
    ("TETHER_API_HOST", "two words", "a host name or IP address"),
    ("TETHER_API_PORT", "http", "a whole number from 1 to 65535"),
    ("TETHER_API_PORT", "70000", "a whole number from 1 to 65535"),
    ("TETHER_OPERATOR_HOST", "two words", "a host name or IP address to listen on"),
    ("TETHER_OPERATOR_PORT", "-1", "or 0 for any free port"),
    ("TETHER_MAX_BODY_BYTES", "12", "at least 1024"),
    ("TETHER_VOLUME_ARCHIVE_MAX_BYTES", "1k", "a number of bytes"),
    ("TETHER_PORT_RANGE", "1-2", "FIRST-LAST"),
    ("TETHER_PORT_RANGE", "30000-20000", "FIRST <= LAST"),
    ("TETHER_PUBLISH_ADDRESS", "localhost", "an IP address"),
    ("TETHER_DOCKER_URL", "docker", "unix:///var/run/docker.sock"),
    ("TETHER_INSTALLATION_ID", "Blue_1", "a lowercase letter or digit"),
    ("TETHER_RUNTIME", "kubernetes", "engine or swarm"),
    ("TETHER_POSTGRES_IMAGE", "Not An Image", "a Docker image reference"),
    ("TETHER_PROXY_DIR", "run/proxy", "an absolute path without spaces"),
    ("TETHER_PROXY_SOCKET", "/" + "s" * 120, "at most 107 bytes"),
    ("TETHER_PROXY_HOLD_S", "0", "more than 0 and at most 300"),
    ("TETHER_PROXY_BINARY", "ha proxy", "a command on PATH or an absolute path"),
    ("TETHER_WORKERS", "0", "a whole number from 1 to 256"),
    ("TETHER_WORKERS", "2.5", "a whole number from 1 to 256"),
    ("TETHER_DOCKER_CHANGES", "0", "a whole number from 1 to 256"),
    ("TETHER_DOCKER_CONCURRENCY", "many", "a whole number from 1 to 512"),
    ("TETHER_RESYNC_INTERVAL_S", "inf", "more than 0 and at most 86400"),
    ("TETHER_RESYNC_INTERVAL_S", "0", "more than 0"),
    ("TETHER_LEASE_TTL_S", "nan", "from 1 to 300"),
    ("TETHER_AUTH_FAILURES", "0", "a whole number from 1 to 100000"),
    ("TETHER_AUTH_FAILURE_WINDOW_S", "-5", "more than 0"),
    ("TETHER_TOKEN_CACHE_S", "-1", "from 0 to 3600"),
    ("TETHER_LOGS_SOCKET", "run/logs.sock", "an absolute path without spaces"),
    ("TETHER_LOGS_SECRET", "short", "32 to 256 printable ASCII characters"),
    ("TETHER_DOCKER_TIMEOUT_S", "0", "more than 0 and at most 3600"),
    ("TETHER_API_GRACE_S", "soon", "from 0 to 3600"),
    ("TETHER_STREAM_KEEPALIVE_S", "0.5", "from 1 to 300"),
    ("TETHER_CONSOLE_SESSION_TTL_S", "10", "from 60 to 2592000"),
    ("TETHER_DATABASE_POOL_SIZE", "0", "a whole number from 1 to 1000"),
    ("TETHER_DATABASE_TIMEOUT_S", "inf", "more than 0 and at most 3600"),
    ("TETHER_LOG_FORMAT", "xml", "auto, json or console"),
    ("TETHER_WEBHOOK_CONNECT_TIMEOUT_S", "0", "more than 0 and at most 300"),
    ("TETHER_WEBHOOK_READ_TIMEOUT_S", "-1", "more than 0 and at most 300"),
    ("TETHER_WEBHOOK_TIMEOUT_S", "inf", "more than 0 and at most 600"),
    ("TETHER_WEBHOOK_RETRY_MAX_S", "soon", "more than 0 and at most 86400"),
    ("TETHER_WEBHOOK_GIVE_UP_AFTER_S", "0", "at most 2592000 (30 days)"),
    ("TETHER_WEBHOOK_KEEP_S", "-5", "at most 31622400 (366 days)"),
    ("TETHER_WEBHOOK_CONCURRENCY", "0", "a whole number from 1 to 256"),
    ("TETHER_LOG_LEVEL", "loud", "debug, info, warning or error"),
]


def shown(name: str, value: str) -> str:
    """A value as an error shows it back: the log channel's secret never is."""
    return "*" * min(len(value), 8) if name == "TETHER_LOGS_SECRET" else value


def test_every_setting_says_what_it_expects(capsys: pytest.CaptureFixture[str]) -> None:
    """Each setting has a form in words, and an invalid value is answered with exactly that."""
    fields = {variable(field): field for field in Settings.model_fields}
    assert {name for name, _, _ in INVALID} == set(fields), "a setting without an invalid case"
    for name, value, form in INVALID:
        assert form in expected_form(fields[name]), name
        code, err = start(capsys, ["migrate"], {name: value})
        assert code == 2, name
        assert (
            err == f"error: {name}={shown(name, value)!r} is invalid; expected "
            f"{expected_form(fields[name])}\n"
        )


@pytest.mark.parametrize(("name", "value", "form"), INVALID)
def test_an_invalid_setting_stops_the_server_naming_it(
    capsys: pytest.CaptureFixture[str], name: str, value: str, form: str
) -> None:
    code, err = start(capsys, ["migrate"], {name: value})
    assert code == 2
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    assert f"{name}={shown(name, value)!r} is invalid; expected " in err
    assert form in err
    if name == "TETHER_LOGS_SECRET":
        assert value not in err


@pytest.mark.parametrize("argv", SERVER_COMMANDS, ids=" ".join)
def test_every_server_command_checks_its_settings_first(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, err = start(capsys, argv, {"TETHER_WORKERS": "none"})
    assert code == 2
    assert "TETHER_WORKERS='none' is invalid; expected a whole number from 1 to 256" in err


@pytest.mark.parametrize("name", ["TETHER_API_PORT", "TETHER_DATABASE_URL", "TETHER_LOG_LEVEL"])
def test_an_empty_setting_is_called_empty(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, err = start(capsys, ["migrate"], {name: ""})
    assert code == 2
    assert f"{name}='' is empty; expected {expected_form(name[7:].lower())}" in err


def test_every_problem_is_named_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = start(capsys, ["api"], {"TETHER_API_PORT": "x", "TETHER_LOG_LEVEL": "y"})
    assert code == 2
    assert "TETHER_API_PORT='x' is invalid" in err
    assert "TETHER_LOG_LEVEL='y' is invalid" in err


def test_a_password_in_an_invalid_database_url_is_not_shown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = start(capsys, ["migrate"], {"TETHER_DATABASE_URL": "mysql://me:hunter2@db/x"})
    assert code == 2
    assert "hunter2" not in err
    assert "TETHER_DATABASE_URL='mysql://me:***@db/x' is invalid" in err


def test_a_misspelt_setting_is_warned_about(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = start(capsys, ["migrate"], {"TETHER_API_PROT": "9000", "TETHER_WORKERS": "x"})
    assert code == 2
    assert "warning: TETHER_API_PROT is not a setting and is ignored; did you mean " in err
    assert "TETHER_API_PORT?" in err
    # The CLI's own variables are not settings, and are not warned about.
    code, err = start(capsys, ["migrate"], {"TETHER_TOKEN": "x", "TETHER_WORKERS": "x"})
    assert "warning" not in err


def test_valid_settings_are_read() -> None:
    from tether.cli.settings import load_settings

    settings = load_settings(
        {
            "TETHER_API_PORT": "9000",
            "TETHER_OPERATOR_PORT": "0",
            "TETHER_PUBLISH_ADDRESS": "0.0.0.0",
            "TETHER_DOCKER_URL": "tcp://127.0.0.1:2375",
            "TETHER_RESYNC_INTERVAL_S": "2.5",
            "TETHER_AUTH_FAILURES": "3",
            "tether_workers": "4",  # names are case-insensitive, as in pydantic-settings
        }
    )
    assert (settings.api_port, settings.operator_port, settings.workers) == (9000, 0, 4)
    assert settings.publish_address == "0.0.0.0"
    assert settings.docker_url == "tcp://127.0.0.1:2375"
    assert (settings.resync_interval_s, settings.auth_failures) == (2.5, 3)
    assert load_settings({"DOCKER_HOST": "unix:///run/d.sock"}).docker_url == "unix:///run/d.sock"
