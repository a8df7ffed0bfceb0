"""The lifecycle routes: want a project running or stopped, its containers replaced, or an
earlier deployment back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from tether.api.appstate import StoreDep
from tether.api.auth import Caller
from tether.api.models import MAX_INT, DesiredState, WriteResult
from tether.api.routes import V1
from tether.api.routes.leanwrite import LeanWriteRoute
from tether.api.routes.params import IfMatch, NamePath, expected_generation
from tether.api.routes.responses import WRITE_ERRORS

router = APIRouter(prefix=V1)
Write = Callable[..., Awaitable[WriteResult]]


def lean_write(path: str) -> Callable[[Write], Write]:
    """`@router.post(path, ...)` of a write, served as a `LeanWriteRoute`."""

    def register(endpoint: Write) -> Write:
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            response_model=WriteResult,
            responses=WRITE_ERRORS,
            route_class_override=LeanWriteRoute,
        )
        return endpoint

    return register


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_version: int | None = Field(
        default=None, ge=1, le=MAX_INT, description="Default: the previous one."
    )


@lean_write("/projects/{name}/start")
async def start(
    name: NamePath, caller: Caller, store: StoreDep, if_match: IfMatch = None
) -> WriteResult:
    return await store.set_desired_state(
        name, DesiredState.RUNNING, caller, if_match=expected_generation(if_match)
    )


@lean_write("/projects/{name}/stop")
async def stop(
    name: NamePath, caller: Caller, store: StoreDep, if_match: IfMatch = None
) -> WriteResult:
    return await store.set_desired_state(
        name, DesiredState.STOPPED, caller, if_match=expected_generation(if_match)
    )


@lean_write("/projects/{name}/restart")
async def restart(
    name: NamePath, caller: Caller, store: StoreDep, if_match: IfMatch = None
) -> WriteResult:
    return await store.restart(name, caller, if_match=expected_generation(if_match))


@router.post("/projects/{name}/rollback", response_model=WriteResult, responses=WRITE_ERRORS)
async def rollback(
    name: NamePath,
    caller: Caller,
    store: StoreDep,
    body: RollbackRequest | None = None,
    if_match: IfMatch = None,
) -> WriteResult:
    return await store.rollback(
        name,
        caller,
        to_version=body.to_version if body else None,
        if_match=expected_generation(if_match),
    )
