"""The probe routes of the API: `/healthz`, `/readyz` and `/metrics` (see `tether.api.probes`)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from tether.api import probes
from tether.api.appstate import ReadinessDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=probes.Health)
async def healthz() -> probes.Health:
    """The API process answers (nothing it depends on is checked)."""
    return probes.Health()


@router.get("/readyz", response_class=JSONResponse, responses=probes.READINESS_RESPONSES)
async def readyz(checks: ReadinessDep) -> JSONResponse:
    """Ready to serve: the database answers and its migrations are current (and, under
    `tether up`, the operator's Docker connection and triggers are alive)."""
    return probes.readiness_response(await probes.evaluate(checks))


@router.get("/metrics", response_class=Response, responses=probes.METRICS_RESPONSES)
async def metrics() -> Response:
    """This process's Prometheus metrics (under `tether up`, the operator's too)."""
    return probes.metrics_response()
