"""What one pass learnt and did, and its one log line (docs/logs.md explains the fields)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import structlog

from tether.api.models import NewEvent

log = structlog.get_logger("tether.reconciler")

PassResult = Literal[
    "converged", "waiting", "retrying", "stalled", "deleted", "lost_lease", "crashed"
]


@dataclass
class PassRecord:
    """Filled in as the pass goes; what it did not learn stays empty in its line."""

    project: str
    generation: int | None = None
    desired: str | None = None
    observed: str | None = None
    actions: list[str] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)
    docker_status: int | None = None
    pass_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    began: float = field(default_factory=time.monotonic)

    def elapsed_s(self) -> float:
        return time.monotonic() - self.began


@dataclass(frozen=True)
class Outcome:
    result: PassResult
    requeue_after: float | None = None
    backoff: bool = False
    # Only the endpoint's first answer is awaited: whether it answers now (a probe, no runtime
    # call), for a watcher that holds no worker.
    answers: Callable[[], Awaitable[bool]] | None = None


def log_pass(
    record: PassRecord,
    result: PassResult,
    *,
    attempt: int | None,
    next_delay_s: float | None,
    error: str | None = None,
    level: Literal["info", "warning", "exception"] = "info",
) -> None:
    """The pass's one outcome line; `exception` adds the traceback of the error being handled."""
    emit = getattr(log, level)
    extra = {"error": error} if error is not None else {}
    emit(
        "pass",
        project=record.project,
        pass_id=record.pass_id,
        generation=record.generation,
        desired=record.desired,
        observed=record.observed,
        action=record.actions,
        result=result,
        docker_status=record.docker_status,
        attempt=attempt,
        next_delay_s=next_delay_s,
        duration_ms=round(record.elapsed_s() * 1000),
        **extra,
    )
