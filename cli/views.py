"""The API's answers as the CLI reads them: small frozen records built from the JSON.

The API validates with its pydantic models (`tether.api.models`); the CLI only displays what the
API has already validated, and reads just the fields it shows. Importing pydantic and building
those models costs ~200 ms, more than a whole `tether status` may take (docs/benchmarks.md), so
the client commands read the JSON into these instead. Each field here has the name and meaning of
the model field it mirrors (a test checks that every one exists there). A JSON answer that does not
fit raises `Unreadable`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from tether.api.vocabulary import ConditionType, DesiredState, EventKind

Json = Mapping[str, Any]
T = TypeVar("T")


class Unreadable(ValueError):
    """An answer of the API without a field the CLI reads, or with one of another type."""


def _when(value: Any) -> datetime:
    # The API writes RFC 3339 times; fromisoformat reads them, "Z" included (Python 3.11).
    if not isinstance(value, str):
        raise Unreadable(f"expected a time, got {value!r}")
    return datetime.fromisoformat(value)


def _maybe_when(value: Any) -> datetime | None:
    return None if value is None else _when(value)


def _read(build: Callable[[Json], T], data: Any) -> T:
    if not isinstance(data, Mapping):
        raise Unreadable(f"expected an object, got {type(data).__name__}")
    try:
        return build(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise Unreadable(f"{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class Project:
    name: str
    owner: str
    desired_state: DesiredState
    target_version: int | None
    generation: int
    deletion_requested: bool
    host_port: int
    created_at: datetime

    @classmethod
    def of(cls, data: Json) -> Project:
        return _read(
            lambda d: cls(
                name=d["name"],
                owner=d["owner"],
                desired_state=DesiredState(d["desired_state"]),
                target_version=d["target_version"],
                generation=int(d["generation"]),
                deletion_requested=bool(d["deletion_requested"]),
                host_port=int(d["host_port"]),
                created_at=_when(d["created_at"]),
            ),
            data,
        )


@dataclass(frozen=True)
class Condition:
    type: ConditionType
    status: str
    reason: str
    message: str
    last_transition_time: datetime
    observed_generation: int

    @classmethod
    def of(cls, data: Json) -> Condition:
        return _read(
            lambda d: cls(
                type=ConditionType(d["type"]),
                status=d["status"],
                reason=d["reason"],
                message=d["message"],
                last_transition_time=_when(d["last_transition_time"]),
                observed_generation=int(d["observed_generation"]),
            ),
            data,
        )


@dataclass(frozen=True)
class Status:
    observed_generation: int
    phase: str
    conditions: tuple[Condition, ...]
    running_version: int | None
    container_id: str | None
    endpoint: str | None
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    crash_count: int
    last_exit_code: int | None
    last_crash_at: datetime | None
    oom_killed: bool
    failed_version: int | None
    route: str | None
    serving_version: int | None
    node: str | None

    @classmethod
    def of(cls, data: Json) -> Status:
        return _read(
            lambda d: cls(
                observed_generation=int(d.get("observed_generation", 0)),
                phase=d.get("phase", "Pending"),
                conditions=tuple(Condition.of(c) for c in d.get("conditions", ())),
                running_version=d.get("running_version"),
                container_id=d.get("container_id"),
                endpoint=d.get("endpoint"),
                attempts=int(d.get("attempts", 0)),
                next_attempt_at=_maybe_when(d.get("next_attempt_at")),
                last_error=d.get("last_error"),
                crash_count=int(d.get("crash_count", 0)),
                last_exit_code=d.get("last_exit_code"),
                last_crash_at=_maybe_when(d.get("last_crash_at")),
                oom_killed=bool(d.get("oom_killed", False)),
                failed_version=d.get("failed_version"),
                route=d.get("route"),
                serving_version=d.get("serving_version"),
                node=d.get("node"),
            ),
            data,
        )

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)


def _status(data: Any) -> Status | None:
    return None if data is None else Status.of(data)


@dataclass(frozen=True)
class Event:
    id: int
    project: str
    generation: int | None
    kind: EventKind
    reason: str
    message: str
    actor: str
    created_at: datetime

    @classmethod
    def of(cls, data: Json) -> Event:
        return _read(
            lambda d: cls(
                id=int(d["id"]),
                project=d["project"],
                generation=d["generation"],
                kind=EventKind(d["kind"]),
                reason=d["reason"],
                message=d["message"],
                actor=d["actor"],
                created_at=_when(d["created_at"]),
            ),
            data,
        )


@dataclass(frozen=True)
class ProjectView:
    project: Project
    status: Status | None

    @classmethod
    def of(cls, data: Json) -> ProjectView:
        return _read(lambda d: cls(Project.of(d["project"]), _status(d["status"])), data)


@dataclass(frozen=True)
class WatchView:
    project: Project
    status: Status | None
    events: tuple[Event, ...]

    @classmethod
    def of(cls, data: Json) -> WatchView:
        return _read(
            lambda d: cls(
                Project.of(d["project"]),
                _status(d["status"]),
                tuple(Event.of(e) for e in d["events"]),
            ),
            data,
        )


@dataclass(frozen=True)
class HealthCheck:
    type: str
    path: str | None


@dataclass(frozen=True)
class Deployment:
    version: int
    image: str
    port: int | None
    health: HealthCheck | None
    env: Mapping[str, str]
    secret_env: tuple[str, ...]
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, data: Json) -> Deployment:
        return _read(
            lambda d: cls(
                version=int(d["version"]),
                image=d["image"],
                port=d.get("port"),
                health=(
                    HealthCheck(d["health"]["type"], d["health"].get("path"))
                    if d.get("health")
                    else None
                ),
                env=dict(d.get("env", {})),
                secret_env=tuple(d.get("secret_env", ())),
                created_by=d["created_by"],
                created_at=_when(d["created_at"]),
            ),
            data,
        )


@dataclass(frozen=True)
class LogAttach:
    container: str
    version: int
    state: str

    @classmethod
    def of(cls, data: Json) -> LogAttach:
        return _read(lambda d: cls(d["container"], int(d["version"]), d["state"]), data)


@dataclass(frozen=True)
class LogLine:
    container: str
    stream: str
    time: datetime
    text: str

    @classmethod
    def of(cls, data: Json) -> LogLine:
        return _read(lambda d: cls(d["container"], d["stream"], _when(d["time"]), d["text"]), data)


@dataclass(frozen=True)
class Volume:
    name: str
    docker_name: str
    size_bytes: int | None
    mounted_by: tuple[str, ...]
    in_target: bool
    created_at: datetime | None

    @classmethod
    def of(cls, data: Json) -> Volume:
        return _read(
            lambda d: cls(
                name=d["name"],
                docker_name=d["docker_name"],
                size_bytes=None if d.get("size_bytes") is None else int(d["size_bytes"]),
                mounted_by=tuple(d.get("mounted_by") or ()),
                in_target=bool(d.get("in_target")),
                created_at=_maybe_when(d.get("created_at")),
            ),
            data,
        )


@dataclass(frozen=True)
class Node:
    """A node of the swarm runtime's cluster (`GET /v1/nodes`)."""

    hostname: str
    state: str
    availability: str
    role: str
    address: str
    seen_at: datetime | None

    @classmethod
    def of(cls, data: Json) -> Node:
        return _read(
            lambda d: cls(
                hostname=d["hostname"],
                state=d["state"],
                availability=d["availability"],
                role=d["role"],
                address=d["address"],
                seen_at=_maybe_when(d.get("seen_at")),
            ),
            data,
        )
