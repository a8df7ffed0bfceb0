"""The desired-state contract shared by the store, the HTTP API, the operator and the CLI.

Validation lives here so that every entry point refuses the same bad input with the same message;
the database repeats the structural rules as constraints so that no writer can bypass them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    field_validator,
    model_validator,
)

# The vocabulary is defined without pydantic, for clients that read the API's JSON directly.
from tether.api.vocabulary import PROJECT_NAME_PATTERN as PROJECT_NAME_PATTERN
from tether.api.vocabulary import ConditionType as ConditionType
from tether.api.vocabulary import DesiredState as DesiredState
from tether.api.vocabulary import EventKind as EventKind
from tether.api.vocabulary import Phase as Phase

ENV_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# A Docker image reference: optional registry host[:port], path components, a tag and/or digest.
IMAGE_PATTERN = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"  # a tag: ASCII only (Python's \w is not)
    r"(?:@sha256:[a-f0-9]{64})?$"
)
MAX_IMAGE_LENGTH = 255
MAX_ENV_VARS = 200
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_COMMAND_ARGS = 256
# The largest values of Postgres' integer and bigint columns: numbers that go into a query are
# bounded by them (a larger one is a 422, never a failed query).
MAX_INT = 2**31 - 1
MAX_BIGINT = 2**63 - 1
HEALTH_NEEDS_PORT = "a health check probes the project's endpoint: set port as well"
SECRET_MASK = "••••"  # what the API shows of a secret env value, whatever its length


def _check_image(value: str) -> str:
    if len(value) > MAX_IMAGE_LENGTH:
        raise ValueError(
            f"the image reference is {len(value)} characters long, longer than "
            f"{MAX_IMAGE_LENGTH} characters"
        )
    # fullmatch: with match(), '$' also matches before a trailing newline.
    if not IMAGE_PATTERN.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a Docker image reference; expected a form like "
            "'nginx:1.25', 'registry.example.com:5000/team/app:v2' or 'app@sha256:<64 hex>'"
        )
    return value


def _is_utf8(value: str) -> bool:
    """False for a string with an unpaired surrogate (JSON allows "\\ud800"; UTF-8 does not)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


ProjectName = Annotated[
    str,
    Field(
        pattern=PROJECT_NAME_PATTERN,
        description="A DNS label: a lowercase letter, then up to 62 of a-z, 0-9 or '-'.",
        examples=["shop"],
    ),
]
ImageRef = Annotated[
    str,
    AfterValidator(_check_image),  # its message says what is wrong; the schema says the same
    Field(
        examples=["nginx:1.25"],
        json_schema_extra={
            "pattern": IMAGE_PATTERN.pattern,
            "minLength": 1,
            "maxLength": MAX_IMAGE_LENGTH,
        },
    ),
]
# Strict: JSON `true` or "80" is not a port (lax validation would take them as 1 and 80).
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(default=2.0, ge=0.1, le=300)
    timeout_s: float = Field(default=2.0, ge=0.1, le=60)


class HttpCheck(_Check):
    """Ready when a GET of `path` on the project's endpoint answers 2xx or 3xx."""

    type: Literal["http"]
    path: str = Field(
        default="/",
        min_length=1,
        max_length=1024,
        # The schema says what the validator checks: a '/' first, then no whitespace or control
        # characters (isprintable() is False for those, NUL among them, which jsonb cannot store,
        # and for unpaired surrogates).
        pattern=r"^/[^\s\x00-\x1f\x7f]*$",
        description="The path to GET; any 2xx or 3xx answer is healthy.",
        examples=["/healthz"],
    )

    @field_validator("path", mode="before")
    @classmethod
    def _check_path(cls, path: object) -> object:
        if isinstance(path, str) and (
            not path.startswith("/") or not path.isprintable() or " " in path
        ):
            raise ValueError(
                "health.path must start with '/' and contain no whitespace or control characters"
            )
        return path


class TcpCheck(_Check):
    """Ready when the project's endpoint accepts a TCP connection (no path: nothing is sent)."""

    type: Literal["tcp"]

    @model_validator(mode="before")
    @classmethod
    def _no_path(cls, data: object) -> object:
        if isinstance(data, dict) and "path" in data:
            raise ValueError("health.path is only allowed for an http health check")
        return data


HealthCheck = Annotated[
    HttpCheck | TcpCheck,
    Discriminator(
        "type",
        custom_error_type="health_type",
        custom_error_message="health.type must be 'http' (with a path) or 'tcp' (without one)",
    ),
]
"""How tether decides Ready: probe the project's endpoint over HTTP (with a path) or TCP."""


Strategy = Literal["start-first", "stop-first"]
MAX_VOLUMES = 32
MAX_VOLUME_PATH = 4096
VOLUME_NAME_PATTERN = PROJECT_NAME_PATTERN  # a DNS label, like a project's name
BIND_REFUSED = (
    "tether mounts named volumes only, never a host path: a host directory is not tether's to "
    "keep (nothing would create, list, back up or protect it) and it would give the project the "
    "host's files; name a volume instead (`--volume data:/var/lib/app`) and copy existing data in "
    "with `tether volume import`"
)


class VolumeMount(BaseModel):
    """A named volume of the project, mounted at `path` in its container. The volume belongs to
    the project: created once, kept through every replacement, removed only on request."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        description="The volume's name within its project: a DNS label.", examples=["data"]
    )
    path: str = Field(
        description="Where the container sees it: an absolute path.", examples=["/var/lib/app"]
    )
    read_only: bool = Field(default=False, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bind_mounts(cls, data: object) -> object:
        if isinstance(data, dict):
            if any(key in data for key in ("source", "host_path", "bind", "type")):
                raise ValueError(BIND_REFUSED)
            name = data.get("name")
            if isinstance(name, str) and name.startswith(("/", ".", "~")):
                raise ValueError(f"volume name {name!r} is a host path: {BIND_REFUSED}")
        return data

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not re.fullmatch(VOLUME_NAME_PATTERN, name):
            raise ValueError(
                f"volume name {name!r} is invalid; use a DNS label: a lowercase letter, then up "
                "to 62 of a-z, 0-9 or '-'"
            )
        return name

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str) -> str:
        parts = path.split("/")
        if (
            not path.startswith("/")
            or len(path) > MAX_VOLUME_PATH
            or path == "/"
            or any(part in (".", "..") for part in parts)
            or not path.isprintable()
            or ":" in path
        ):
            raise ValueError(
                f"volume path {path!r} is invalid; give an absolute path in the container "
                "(like '/var/lib/app'), not '/' itself, without '.', '..', ':' or control "
                "characters"
            )
        return "/" + "/".join(part for part in parts if part)  # '/a//b/' is '/a/b'


class DeploymentSpec(BaseModel):
    """What a user asks to run. Immutable once stored as a numbered deployment."""

    model_config = ConfigDict(extra="forbid")

    image: ImageRef
    command: list[str] | None = Field(default=None, max_length=MAX_COMMAND_ARGS)
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: list[str] = Field(
        default_factory=list,
        max_length=MAX_ENV_VARS,
        description="Keys of `env` whose values are secret: stored as given and passed to the "
        f"container, but never shown: every answer of the API shows them as {SECRET_MASK!r}.",
        examples=[["API_KEY"]],
    )
    port: Port | None = Field(
        default=None, description="The container port published on the project's endpoint."
    )
    health: HealthCheck | None = None
    ready_deadline_s: int = Field(
        default=120,
        ge=1,
        le=3600,
        strict=True,
        description="How long a new deployment may take to be Ready.",
    )
    stop_grace_s: int = Field(default=10, ge=0, le=300, strict=True)
    strategy: Strategy = Field(
        default="start-first",
        description="How a new deployment replaces the running one. `start-first`: the new "
        "container starts beside the old and gets the endpoint once Ready; the old then drains "
        "and stops (a failed one never touches the old). `stop-first`: the old stops before the "
        "new starts, for workloads that cannot run twice at once; the proxy holds new "
        "connections during the gap instead of refusing them.",
    )
    drain_timeout_s: int = Field(
        default=30,
        ge=0,
        le=3600,
        strict=True,
        description="After a switch, how long the old container may finish the requests (HTTP) "
        "or connections (TCP) it has in flight before it is stopped.",
    )
    memory_mb: int | None = Field(default=None, ge=4, le=1024 * 1024, strict=True)
    cpus: float | None = Field(default=None, gt=0, le=1024)
    volumes: list[VolumeMount] = Field(
        default_factory=list,
        max_length=MAX_VOLUMES,
        description="Named volumes of the project mounted in its container. A deployment with a "
        "writable volume is replaced stop-first unless it sets `strategy` itself (two writers "
        "on one volume corrupt most data; see docs/volumes.md).",
    )

    @field_validator("env")
    @classmethod
    def _check_env(cls, env: dict[str, str]) -> dict[str, str]:
        if len(env) > MAX_ENV_VARS:
            raise ValueError(f"at most {MAX_ENV_VARS} environment variables are allowed")
        for key, value in env.items():
            if not re.fullmatch(ENV_KEY_PATTERN, key):
                raise ValueError(
                    f"environment variable name {key!r} is invalid; use letters, digits and '_', "
                    "not starting with a digit"
                )
            if "\x00" in value:
                raise ValueError(f"environment variable {key!r} contains a NUL byte")
            if not _is_utf8(value):
                raise ValueError(
                    f"environment variable {key!r} is not valid text (an unpaired surrogate)"
                )
            if len(value.encode()) > MAX_ENV_VALUE_BYTES:
                raise ValueError(f"environment variable {key!r} is longer than 32 KiB")
        return env

    @field_validator("command")
    @classmethod
    def _check_command(cls, command: list[str] | None) -> list[str] | None:
        if command is not None and (
            not command or any("\x00" in arg or not _is_utf8(arg) for arg in command)
        ):
            raise ValueError(
                "command must be a non-empty list of arguments without NUL bytes or unpaired "
                "surrogates"
            )
        return command

    @model_validator(mode="after")
    def _secrets_are_env_keys(self) -> DeploymentSpec:
        unknown = [key for key in self.secret_env if key not in self.env]
        if unknown:
            raise ValueError(
                f"secret_env names {', '.join(map(repr, unknown))}, not in env: list only keys "
                "of env"
            )
        once = list(dict.fromkeys(self.secret_env))  # each once, in the given order
        if once != self.secret_env:
            self.secret_env = once
        return self

    @model_validator(mode="after")
    def _volumes_once(self) -> DeploymentSpec:
        for what, values in (
            ("name", [v.name for v in self.volumes]),
            ("path", [v.path for v in self.volumes]),
        ):
            twice = sorted({value for value in values if values.count(value) > 1})
            if twice:
                raise ValueError(
                    f"volume {what} {', '.join(map(repr, twice))} is given more than once: "
                    f"each volume {what} may appear once"
                )
        return self

    @model_validator(mode="after")
    def _writable_volumes_stop_first(self) -> DeploymentSpec:
        """Unless the deployment chose its strategy, one with a writable volume never runs two
        containers on it at once."""
        if "strategy" not in self.model_fields_set and self.writes_volumes:
            self.strategy = "stop-first"
        return self

    @property
    def writes_volumes(self) -> bool:
        return any(not volume.read_only for volume in self.volumes)

    @model_validator(mode="after")
    def _health_needs_port(self) -> DeploymentSpec:
        if self.health is not None and self.port is None:
            raise ValueError(HEALTH_NEEDS_PORT)
        return self


class Deployment(DeploymentSpec):
    project: ProjectName
    version: int
    created_by: str
    created_at: datetime

    def masked(self) -> Deployment:
        """This deployment as the API shows it: the values of secret env keys masked. The
        operator, which passes `env` to the container, reads deployments unmasked."""
        if not self.secret_env:
            return self
        secret = set(self.secret_env)
        env = {key: SECRET_MASK if key in secret else value for key, value in self.env.items()}
        return self.model_copy(update={"env": env})


class VolumeView(BaseModel):
    """One of a project's volumes, as the operator last observed it on the Docker host."""

    name: str
    docker_name: str = Field(description="The Docker volume's own name.")
    size_bytes: int | None = Field(
        default=None, description="Its size as Docker last measured it (None: not measured yet)."
    )
    mounted_by: list[str] = Field(
        default_factory=list, description="The names of the containers that mount it."
    )
    in_target: bool = Field(
        default=False,
        description="Whether the target deployment mounts it; one that is not is kept, "
        "unmounted, until it is deleted explicitly.",
    )
    created_at: datetime | None = None
    observed_at: datetime


class ObservedVolume(NamedTuple):
    """One of a project's Docker volumes as the operator saw it in a pass."""

    name: str
    docker_name: str
    mounted_by: tuple[str, ...]
    created_at: datetime | None


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ProjectName


class Project(BaseModel):
    """A project's desired state. `generation` rises once per real change of it."""

    name: ProjectName
    owner: str
    desired_state: DesiredState
    target_version: int | None
    restart_token: int
    generation: int
    deletion_requested: bool
    delete_volumes: bool = Field(
        default=False,
        description="The deletion asked for removes the project's volumes too, once its "
        "containers are gone.",
    )
    host_port: int
    created_at: datetime
    updated_at: datetime


class Condition(BaseModel):
    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    last_transition_time: datetime
    observed_generation: int


class Status(BaseModel):
    """What the operator last observed and did. Written only by the operator."""

    project: ProjectName
    observed_generation: int = 0
    phase: Phase = Phase.PENDING
    conditions: list[Condition] = Field(default_factory=list)
    running_version: int | None = None
    container_id: str | None = None
    ready_container_id: str | None = None
    endpoint: str | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    crash_count: int = 0
    last_exit_code: int | None = None
    last_crash_at: datetime | None = None
    oom_killed: bool = False
    failed_version: int | None = None
    updated_at: datetime | None = None
    route: str | None = Field(
        default=None,
        description="Where the proxy sends the endpoint: the upstream address, `held` (new "
        "connections wait for the next route), or none (refused).",
    )
    serving_version: int | None = Field(
        default=None, description="The deployment the endpoint's traffic goes to."
    )
    serving_container_id: str | None = None
    node: str | None = Field(
        default=None, description="The swarm runtime: the node the project's task runs on."
    )

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)


class ClusterNode(BaseModel):
    """A node of the swarm runtime's cluster, as the operator last listed it."""

    id: str
    hostname: str
    address: str
    state: str  # ready, down, unknown, disconnected
    availability: str  # active, pause, drain
    role: str  # manager, worker
    seen_at: datetime | None = None


class NewEvent(NamedTuple):
    """An event a pass or a desired write records; the store gives it its id, actor and time."""

    kind: EventKind
    reason: str
    message: str


class Event(BaseModel):
    id: int
    project: str
    generation: int | None
    kind: EventKind
    reason: str
    message: str
    actor: str
    created_at: datetime
    token_id: int | None = Field(
        default=None, description="The API token of a desired change (none: the operator's)."
    )


class ProjectView(BaseModel):
    """A project as the API shows it: desired state, target deployment and status together."""

    project: Project
    status: Status | None


class WriteResult(BaseModel):
    """The answer to every desired-state write: what is wanted now, and whether it changed."""

    project: Project
    changed: bool
    message: str


class Principal(BaseModel):
    """Who is asking: a token's owner. An admin sees every owner's projects; a read-only token
    reads and watches, and every write it sends is refused. `token_id` names the token in the
    events of its writes (None: not a stored token)."""

    owner: str
    admin: bool = False
    read_only: bool = False
    token_id: int | None = None

    @property
    def scope(self) -> str | None:
        """The owner whose projects this principal may see, or None for all of them."""
        return None if self.admin else self.owner


class DesiredSnapshot(BaseModel):
    """Everything one reconcile pass needs from Postgres, read in one query."""

    project: Project
    target: Deployment | None
    running: Deployment | None
    status: Status | None


class WatchView(BaseModel):
    """A project as a watcher sees it, sent at once and again on every change: the desired state,
    what the operator last observed, and the latest events (oldest first)."""

    project: Project
    status: Status | None
    events: list[Event]


LogStream = Literal["stdout", "stderr"]


class LogAttach(BaseModel):
    """A log stream starts reading one of the project's containers: the first one, and the next
    one each time a follow moves on (a restart, a new deployment)."""

    container: str
    name: str
    version: int
    state: str
    started_at: datetime | None = None


class LogLine(BaseModel):
    """One line a project's container wrote, without its line break."""

    container: str
    version: int
    stream: LogStream
    time: datetime
    text: str


TokenRefusalReason = Literal["unknown", "revoked", "expired"]


class TokenRefusal(NamedTuple):
    """Why a token is refused, and the message that says so."""

    reason: TokenRefusalReason
    message: str


class TokenInfo(BaseModel):
    """A stored token as `tether token list` shows it: never the token, nor its hash."""

    id: int
    owner: str
    admin: bool
    read_only: bool
    created_at: datetime
    last_used_at: datetime | None = Field(description="Recorded at most once a minute.")
    expires_at: datetime | None
    revoked_at: datetime | None


class NewToken(NamedTuple):
    """A token just created: the secret (shown once), its id and when it expires."""

    token: str
    id: int
    expires_at: datetime | None
