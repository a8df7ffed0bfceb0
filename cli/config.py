"""Where the CLI finds the API and its token.

The config file (`$TETHER_CONFIG`, else `$XDG_CONFIG_HOME/tether/config.json`, else
`~/.config/tether/config.json`) holds `{"url": ..., "token": ...}`, written by `tether login` and on
first run by `tether up`, readable only by its owner. `TETHER_URL` and `TETHER_TOKEN` override it;
`TETHER_TIMEOUT` (seconds) bounds every request.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tether.cli.errors import EXIT_USAGE, CliError

DEFAULT_URL = "http://127.0.0.1:8321"
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str | None
    timeout_s: float
    path: Path


def config_path(env: Mapping[str, str]) -> Path:
    if env.get("TETHER_CONFIG"):
        return Path(env["TETHER_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "tether" / "config.json"


def check_url(url: str, source: str) -> str:
    """An http(s) base URL without a trailing slash, or a usage error naming where it came from."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(
            f"{source} must be an http:// or https:// URL such as {DEFAULT_URL}, not {url!r}",
            exit_code=EXIT_USAGE,
        )
    return url.strip().rstrip("/")


def read_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CliError(f"cannot read the config file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"the config file {path} is not valid JSON ({exc.msg}, line {exc.lineno}); "
            "fix it or run `tether login` again"
        ) from exc
    if not isinstance(data, dict):
        raise CliError(f"the config file {path} must hold a JSON object; run `tether login` again")
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def load(env: Mapping[str, str]) -> ClientConfig:
    path = config_path(env)
    saved = read_file(path)
    if env.get("TETHER_URL"):
        url = check_url(env["TETHER_URL"], "TETHER_URL")
    else:
        url = check_url(saved.get("url", DEFAULT_URL), f"the url in {path}")
    token = env.get("TETHER_TOKEN") or saved.get("token") or None
    return ClientConfig(url=url, token=token, timeout_s=timeout(env), path=path)


def timeout(env: Mapping[str, str]) -> float:
    """Seconds any one request may take: TETHER_TIMEOUT, else 10."""
    text = env.get("TETHER_TIMEOUT")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise CliError(
            f"TETHER_TIMEOUT must be a positive number of seconds, not {text!r}",
            exit_code=EXIT_USAGE,
        )
    return value


def save(path: Path, *, url: str, token: str) -> None:
    """Write the config file atomically, readable and writable by its owner only (0600)."""
    import tempfile  # only here: the commands that only read the file do not pay for it

    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".config-", dir=path.parent)  # created 0600
        try:
            with os.fdopen(fd, "w") as file:
                json.dump({"url": url, "token": token}, file, indent=2)
                file.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise CliError(f"cannot write the config file {path}: {exc.strerror}") from exc
