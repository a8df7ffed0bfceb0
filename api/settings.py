"""Server-side configuration, from `TETHER_*` environment variables.

Every field is one variable (`TETHER_` + the field name in capitals) and one row of the README's
configuration table. Each field's `expected` form says, in words, what a valid value looks like: an
invalid or empty value stops the process at start with a message naming the variable and that form
(see `tether.cli.server.load_settings` for how it is shown).
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from tether.api.models import IMAGE_PATTERN
from tether.api.store import PortRange

PREFIX = "TETHER_"
# sun_path holds 108 bytes on Linux, one of them the terminating NUL.
UNIX_PATH_MAX = 107


def _docker_url_default() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _check_port_range(value: str) -> str:
    match = re.fullmatch(r"(\d{1,5})-(\d{1,5})", value)
    if not match or not 1024 <= int(match[1]) <= int(match[2]) <= 65535:
        raise ValueError("not a port range")
    return value


def _check_dsn(value: str) -> str:
    if not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("not a postgresql:// URL")
    return value


def _check_ip(value: str) -> str:
    ipaddress.ip_address(value)  # a ValueError names the value
    return value


def _check_host(value: str) -> str:
    if not value or any(c.isspace() for c in value) or "/" in value:
        raise ValueError("not a host name or IP address")
    return value


def _check_docker_url(value: str) -> str:
    if not re.fullmatch(r"(unix://\S+|(tcp|http|https)://[^\s/]+/?)", value):
        raise ValueError("not a Docker Engine URL")
    return value


def _check_path(value: str) -> str:
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError("not an absolute path without spaces")
    return value


def _check_socket_path(value: str) -> str:
    _check_path(value)
    if len(value.encode()) > UNIX_PATH_MAX:
        raise ValueError("too long for a unix socket")
    return value


def _check_optional_socket_path(value: str) -> str:
    return _check_socket_path(value) if value else value


def _check_command(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_./+-]+", value) or ("/" in value and value[0] != "/"):
        raise ValueError("not a command name or absolute path")
    return value


def _check_image(value: str) -> str:
    if not IMAGE_PATTERN.fullmatch(value):
        raise ValueError("not an image reference")
    return value


def setting(default: Any = ..., *, expected: str, description: str, **kwargs: Any) -> Any:
    """A field of `Settings`: its README description, and the `expected` form an error shows."""
    if "default_factory" not in kwargs:
        kwargs["default"] = default
    return Field(description=description, json_schema_extra={"expected": expected}, **kwargs)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    database_url: Annotated[str, AfterValidator(_check_dsn)] = setting(
        "postgresql://tether:tether@127.0.0.1:5433/tether",
        expected="a postgresql:// URL, e.g. postgresql://user:password@host:5432/database",
        description="Postgres DSN of the desired-state store.",
    )
    api_host: Annotated[str, AfterValidator(_check_host)] = setting(
        "127.0.0.1",
        expected="a host name or IP address to listen on, e.g. 127.0.0.1 or 0.0.0.0",
        description="Address the HTTP API listens on.",
    )
    api_port: int = setting(
        8321,
        ge=1,
        le=65535,
        expected="a TCP port, a whole number from 1 to 65535",
        description="Port of the HTTP API.",
    )
    operator_host: Annotated[str, AfterValidator(_check_host)] = setting(
        "127.0.0.1",
        expected="a host name or IP address to listen on, e.g. 127.0.0.1",
        description="Address `tether operator` serves /healthz, /readyz and /metrics on.",
    )
    operator_port: int = setting(
        8322,
        ge=0,
        le=65535,
        expected="a TCP port, a whole number from 1 to 65535, or 0 for any free port",
        description="Port of the operator's health and metrics endpoint (0: any free port, "
        "logged at start: for several operators on one host).",
    )
    max_body_bytes: int = setting(
        1024 * 1024,
        ge=1024,
        expected="a number of bytes, a whole number of at least 1024",
        description="Larger request bodies are refused with 413.",
    )
    volume_archive_max_bytes: int = setting(
        1024**3,
        ge=1024,
        expected="a number of bytes, a whole number of at least 1024",
        description="The largest volume export or import (`tether volume export/import`).",
    )
    port_range: Annotated[str, AfterValidator(_check_port_range)] = setting(
        "20000-29999",
        expected="FIRST-LAST, 1024 <= FIRST <= LAST <= 65535, e.g. 20000-29999",
        description="Host ports allocated to project endpoints.",
    )
    publish_address: Annotated[str, AfterValidator(_check_ip)] = setting(
        "127.0.0.1",
        expected="an IP address of this host, e.g. 127.0.0.1 or 0.0.0.0",
        description="Host address project endpoints are published on.",
    )
    docker_url: Annotated[str, AfterValidator(_check_docker_url)] = setting(
        default_factory=_docker_url_default,
        expected="a Docker Engine URL, e.g. unix:///var/run/docker.sock or tcp://127.0.0.1:2375",
        description="Docker Engine URL (else DOCKER_HOST, else the default socket); under the "
        "swarm runtime, a Swarm manager's.",
    )
    runtime: str = setting(
        "engine",
        pattern=r"^(engine|swarm)$",
        expected="engine or swarm",
        description="What runs projects: `engine` (one Docker engine, a container per project) or "
        "`swarm` (a Docker Swarm cluster whose manager TETHER_DOCKER_URL names, a service per "
        "project).",
    )
    installation_id: str = setting(
        "default",
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        expected="a lowercase letter or digit, then up to 62 of a-z, 0-9 or '-', e.g. blue",
        description="Labels this installation's containers; others are ignored.",
    )
    postgres_image: Annotated[str, AfterValidator(_check_image)] = setting(
        "postgres:15",
        max_length=255,
        expected="a Docker image reference, e.g. postgres:15",
        description="Image `tether up` runs Postgres from.",
    )
    proxy_dir: Annotated[str, AfterValidator(_check_path)] = setting(
        "/run/tether/proxy",
        max_length=80,
        expected="an absolute path without spaces, at most 80 characters, e.g. /run/tether/proxy",
        description="Directory of the proxy's configuration and route map (written by the proxy "
        "process and the operator: share it between them).",
    )
    proxy_socket: Annotated[str, AfterValidator(_check_socket_path)] = setting(
        "/run/tether/proxy/admin.sock",
        expected="an absolute path without spaces, at most 107 bytes, e.g. "
        "/run/tether/proxy/admin.sock",
        description="HAProxy's admin socket (its runtime API), where the operator changes routes.",
    )
    proxy_hold_s: float = setting(
        10.0,
        gt=0,
        le=300,
        allow_inf_nan=False,
        expected="a number of seconds, more than 0 and at most 300, e.g. 10",
        description="How long the proxy holds a new connection or request to a project between "
        "two containers (a stop-first replacement) before it answers 503 or closes it.",
    )
    proxy_binary: Annotated[str, AfterValidator(_check_command)] = setting(
        "haproxy",
        expected="a command on PATH or an absolute path, e.g. haproxy or /usr/sbin/haproxy",
        description="The HAProxy executable `tether proxy` and `tether up` run.",
    )
    docker_timeout_s: float = setting(
        30.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        expected="a number of seconds, more than 0 and at most 3600, e.g. 30",
        description="How long one Docker API call may take before it is retried as a transient "
        "fault (a stop: this plus the container's grace period).",
    )
    logs_socket: Annotated[str, AfterValidator(_check_optional_socket_path)] = setting(
        "",
        expected="empty, or an absolute path without spaces, at most 107 bytes, e.g. "
        "/run/tether/logs/operator.sock",
        description="Where `tether operator` serves container output to API processes without "
        "Docker access (a unix socket), and where `tether api` reads it instead of Docker. "
        "Empty: the operator serves none, and the API reads Docker itself.",
    )
    logs_secret: str = setting(
        "",
        pattern=r"^(|[!-~]{32,256})$",
        expected="empty, or 32 to 256 printable ASCII characters without spaces",
        description="The shared secret API processes show the operator's log channel "
        "(TETHER_LOGS_SOCKET); required with it.",
    )
    workers: int = setting(
        12,
        ge=1,
        le=256,
        expected="a whole number from 1 to 256",
        description="Projects reconciled at once: a few more than TETHER_DOCKER_CHANGES, so "
        "that the looks and records around changes overlap other passes' changes.",
    )
    docker_concurrency: int = setting(
        16,
        ge=1,
        le=512,
        expected="a whole number from 1 to 512",
        description="Docker API calls in flight at once, container changes aside.",
    )
    docker_changes: int = setting(
        8,
        ge=1,
        le=256,
        expected="a whole number from 1 to 256",
        description="Container changes (create, start, stop, unpause, remove; under Swarm: "
        "service create, update, remove) in flight at once: what Docker can take.",
    )
    resync_interval_s: float = setting(
        30.0,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        expected="a number of seconds, more than 0 and at most 86400, e.g. 30",
        description="Full resync period (jittered by ±10 %).",
    )
    lease_ttl_s: float = setting(
        10.0,
        ge=1,
        le=300,
        allow_inf_nan=False,
        expected="a number of seconds from 1 to 300, e.g. 10",
        description="Operator lease (DB clock): a standby takes over at most this long after "
        "the active operator hangs or is cut off (at once when it dies or hands over).",
    )
    auth_failures: int = setting(
        10,
        ge=1,
        le=100000,
        expected="a whole number from 1 to 100000",
        description="Failed authentications a client address may make at once (a burst) before "
        "it is refused with 429.",
    )
    auth_failure_window_s: float = setting(
        60.0,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        expected="a number of seconds, more than 0 and at most 86400, e.g. 60",
        description="An address regains its whole burst of failures over this long.",
    )
    webhook_connect_timeout_s: float = setting(
        5.0,
        gt=0,
        le=300,
        allow_inf_nan=False,
        expected="a number of seconds, more than 0 and at most 300, e.g. 5",
        description="A webhook attempt that has not connected to its receiver by then fails.",
    )
    webhook_read_timeout_s: float = setting(
        10.0,
        gt=0,
        le=300,
        allow_inf_nan=False,
        expected="a number of seconds, more than 0 and at most 300, e.g. 10",
        description="A webhook attempt fails when its receiver sends nothing for this long.",
    )
    webhook_timeout_s: float = setting(
        15.0,
        gt=0,
        le=600,
        allow_inf_nan=False,
        expected="a number of seconds, more than 0 and at most 600, e.g. 15",
        description="A whole webhook attempt, answer included, is cut off (and failed) after "
        "this long: a receiver that never answers or streams forever costs no more.",
    )
    webhook_retry_max_s: float = setting(
        3600.0,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        expected="a number of seconds, more than 0 and at most 86400, e.g. 3600",
        description="Webhook retries wait 1 s, doubling (±20 %), up to this long.",
    )
    webhook_give_up_after_s: float = setting(
        86400.0,
        gt=0,
        le=30 * 86400,
        allow_inf_nan=False,
        expected="a number of seconds, more than 0 and at most 2592000 (30 days), e.g. 86400",
        description="A webhook delivery not made within this long of its event is given up "
        "(`failed` in `tether webhook deliveries`).",
    )
    webhook_keep_s: float = setting(
        7 * 86400.0,
        gt=0,
        le=366 * 86400,
        allow_inf_nan=False,
        expected="a number of seconds, more than 0 and at most 31622400 (366 days), e.g. 604800",
        description="Finished webhook deliveries (delivered or given up) are kept this long "
        "for `tether webhook deliveries`, then deleted.",
    )
    webhook_concurrency: int = setting(
        8,
        ge=1,
        le=256,
        expected="a whole number from 1 to 256",
        description="Webhook attempts in flight at once (one at a time per hook and project).",
    )
    api_grace_s: float = setting(
        10.0,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        expected="a number of seconds from 0 to 3600, e.g. 10",
        description="How long a stopping API lets requests in flight finish before it closes "
        "them (watch and log streams end at once: their clients reconnect).",
    )
    stream_keepalive_s: float = setting(
        15.0,
        ge=1,
        le=300,
        allow_inf_nan=False,
        expected="a number of seconds from 1 to 300, e.g. 15",
        description="A watch or log stream silent this long gets a keep-alive comment (keeps "
        "proxies and load balancers in front of the API from closing it as idle).",
    )
    console_session_ttl_s: float = setting(
        8 * 3600.0,
        ge=60,
        le=30 * 86400,
        allow_inf_nan=False,
        expected="a number of seconds from 60 to 2592000 (30 days), e.g. 28800",
        description="A web console session ends this long after sign-in.",
    )
    database_pool_size: int = setting(
        10,
        ge=1,
        le=1000,
        expected="a whole number from 1 to 1000",
        description="Postgres connections each server process may hold at once (LISTEN and "
        "lease connections come on top).",
    )
    database_timeout_s: float = setting(
        30.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        expected="a number of seconds, more than 0 and at most 3600, e.g. 30",
        description="How long one Postgres statement may take before it is abandoned as failed.",
    )
    token_cache_s: float = setting(
        5.0,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        expected="a number of seconds from 0 to 3600, e.g. 5",
        description="How long an API process trusts a token it looked up without asking Postgres "
        "again (0: ask every time). A revocation is heard at once by every API process; one that "
        "missed it (its listener reconnecting) refuses the token at most this long after.",
    )
    log_format: str = setting(
        "auto",
        pattern=r"^(auto|json|console)$",
        expected="auto, json or console",
        description="`json`, `console`, or `auto` (console on a TTY, else JSON).",
    )
    log_level: str = setting(
        "info",
        pattern=r"^(debug|info|warning|error)$",
        expected="debug, info, warning or error",
        description="`debug`, `info`, `warning` or `error`.",
    )

    @property
    def ports(self) -> PortRange:
        first, last = self.port_range.split("-")
        return PortRange(int(first), int(last))


def variable(field: str) -> str:
    """The environment variable of a `Settings` field."""
    return PREFIX + field.upper()


def expected_form(field: str) -> str:
    """In words, what a valid value of a `Settings` field looks like."""
    info: FieldInfo = Settings.model_fields[field]
    extra = info.json_schema_extra
    assert isinstance(extra, dict), field  # every field is declared with `setting()`
    return str(extra["expected"])
