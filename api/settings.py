"""Server-side configuration, from `TETHER_*` environment variables.

An invalid value stops the process at start with a message naming the variable and the expected
form (see `tether.cli` for how it is shown).
"""

from __future__ import annotations

import os
import re
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tether.api.store import PortRange


def _docker_url_default() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _check_port_range(value: str) -> str:
    match = re.fullmatch(r"(\d{1,5})-(\d{1,5})", value)
    if not match or not 1024 <= int(match[1]) <= int(match[2]) <= 65535:
        raise ValueError("expected FIRST-LAST, 1024 <= FIRST <= LAST <= 65535, e.g. 20000-29999")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_", extra="ignore")

    database_url: str = Field(
        default="postgresql://tether:tether@127.0.0.1:5433/tether",
        description="Postgres DSN of the desired-state store.",
    )
    api_host: str = Field(default="127.0.0.1", description="Address the HTTP API listens on.")
    api_port: int = Field(default=8321, ge=1, le=65535, description="Port of the HTTP API.")
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Larger request bodies are refused with 413."
    )
    port_range: Annotated[str, AfterValidator(_check_port_range)] = Field(
        default="20000-29999", description="Host ports allocated to project endpoints."
    )
    publish_address: str = Field(
        default="127.0.0.1", description="Host address project endpoints are published on."
    )
    docker_url: str = Field(
        default_factory=_docker_url_default,
        description="Docker Engine URL (else DOCKER_HOST, else the default socket).",
    )
    installation_id: str = Field(
        default="default",
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="Labels this installation's containers; others are ignored.",
    )
    postgres_image: str = Field(
        default="postgres:15", description="Image `tether up` runs Postgres from."
    )
    workers: int = Field(default=8, ge=1, le=256, description="Projects reconciled at once.")
    docker_concurrency: int = Field(
        default=16, ge=1, le=512, description="Docker API calls in flight at once."
    )
    resync_interval_s: float = Field(
        default=30.0, gt=0, description="Full resync period (jittered by ±10 %)."
    )
    lease_ttl_s: float = Field(
        default=15.0,
        ge=1,
        le=300,
        description="Operator lease: a standby takes over this long after the active one dies.",
    )
    log_format: str = Field(default="auto", pattern=r"^(auto|json|console)$")
    log_level: str = Field(default="info", pattern=r"^(debug|info|warning|error)$")

    @field_validator("database_url")
    @classmethod
    def _check_dsn(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a postgresql:// URL, e.g. postgresql://user:pw@host:5432/db")
        return value

    @property
    def ports(self) -> PortRange:
        first, last = self.port_range.split("-")
        return PortRange(int(first), int(last))
