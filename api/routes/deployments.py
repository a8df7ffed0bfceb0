"""The deployment routes: deploy a new version, and read the deployments."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from tether.api.appstate import StoreDep
from tether.api.auth import Caller
from tether.api.models import MAX_INT, Deployment, DeploymentSpec, WriteResult
from tether.api.routes import V1
from tether.api.routes.params import IfMatch, NamePath, expected_generation
from tether.api.routes.responses import READ_ERRORS, WRITE_ERRORS

router = APIRouter(prefix=V1)


class DeployResult(WriteResult):
    deployment: Deployment


@router.post(
    "/projects/{name}/deployments",
    response_model=DeployResult,
    status_code=201,
    responses=WRITE_ERRORS,
)
async def deploy(
    name: NamePath,
    spec: DeploymentSpec,
    caller: Caller,
    store: StoreDep,
    start: Annotated[bool, Query(description="Also want the project running.")] = True,
    if_match: IfMatch = None,
) -> DeployResult:
    result, deployment = await store.deploy(
        name, spec, caller, start=start, if_match=expected_generation(if_match)
    )
    return DeployResult(**result.model_dump(), deployment=deployment.masked())


@router.get("/projects/{name}/deployments", response_model=list[Deployment], responses=READ_ERRORS)
async def deployments(name: NamePath, caller: Caller, store: StoreDep) -> list[Deployment]:
    return [d.masked() for d in await store.deployments(name, caller)]


@router.get(
    "/projects/{name}/deployments/{version}",
    response_model=Deployment,
    responses=READ_ERRORS,
)
async def deployment(
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=MAX_INT)],
    caller: Caller,
    store: StoreDep,
) -> Deployment:
    return (await store.deployment(name, version, caller)).masked()
