"""Health and metrics endpoints, for the API and for the operator process.

- `/healthz`: the process answers (it does not look at anything it depends on).
- `/readyz`: everything it depends on answers: 200, or 503 with the checks that failed and why.
- `/metrics`: this process's Prometheus registry in the text format (`tether up` runs the API and
  the operator in one process: its `/metrics` shows both).

Each readiness check is bounded in time: a dependency that hangs is a failed check, never a probe
that hangs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Literal, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

T = TypeVar("T")
CHECK_TIMEOUT_S = 5.0


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """What `/readyz` answers: ready when every check passes."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, bool] = Field(description="Each check, true when it passes.")
    message: str = Field(description="'ready', or which checks failed and why.")
    info: dict[str, bool | int | str | None] = Field(
        default_factory=dict,
        description="Reported, but not needed to be ready (e.g. whether this operator is the "
        "active one: a standby is ready to take over; its name and lease epoch, and the active "
        "holder's).",
    )


class Checks:
    """Collects the results of readiness checks."""

    def __init__(self) -> None:
        self._checks: dict[str, bool] = {}
        self._problems: dict[str, str] = {}
        self._info: dict[str, bool | int | str | None] = {}

    def passed(self, name: str) -> None:
        self._checks[name] = True

    def failed(self, name: str, why: str) -> None:
        self._checks[name] = False
        self._problems[name] = why

    def note(self, name: str, value: bool | int | str | None) -> None:
        self._info[name] = value

    def readiness(self) -> Readiness:
        checks = dict(sorted(self._checks.items()))
        if all(checks.values()):
            return Readiness(status="ready", checks=checks, message="ready", info=self._info)
        problems = "; ".join(f"{name}: {why}" for name, why in sorted(self._problems.items()))
        return Readiness(
            status="not_ready", checks=checks, message=f"not ready: {problems}", info=self._info
        )


ReadinessCheck = Callable[[Checks], Awaitable[None]]


async def bounded(awaitable: Awaitable[T], timeout_s: float | None = None) -> T:
    """Await a dependency's answer, or raise TimeoutError after `timeout_s` (default
    CHECK_TIMEOUT_S)."""
    async with asyncio.timeout(CHECK_TIMEOUT_S if timeout_s is None else timeout_s):
        return await awaitable


async def evaluate(checks: Iterable[ReadinessCheck]) -> Readiness:
    found = Checks()
    await asyncio.gather(*(check(found) for check in checks))
    return found.readiness()


def readiness_response(readiness: Readiness) -> JSONResponse:
    ready = readiness.status == "ready"
    headers = {"Cache-Control": "no-store"}
    if not ready:
        headers["Retry-After"] = "2"
    return JSONResponse(
        readiness.model_dump(mode="json"), status_code=200 if ready else 503, headers=headers
    )


def metrics_response() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


READINESS_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"model": Readiness, "description": "Ready: every check passes."},
    503: {"model": Readiness, "description": "Not ready: `message` says which checks failed."},
}
METRICS_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
        "description": "Prometheus text format.",
    }
}


def create_probe_app(checks: Iterable[ReadinessCheck]) -> Starlette:
    """The operator process's endpoint: `/healthz`, `/readyz` from `checks`, and `/metrics`."""
    checks = list(checks)

    async def healthz(_request: Request) -> Response:
        return JSONResponse(Health().model_dump())

    async def readyz(_request: Request) -> Response:
        return readiness_response(await evaluate(checks))

    async def metrics(_request: Request) -> Response:
        return metrics_response()

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )
