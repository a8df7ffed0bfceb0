"""The project routes: create, list, read (with its status) and destroy."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from tether.api.appstate import StoreDep
from tether.api.auth import Caller
from tether.api.models import ProjectCreate, ProjectView, Status, WriteResult
from tether.api.routes import V1
from tether.api.routes.params import IfMatch, NamePath, expected_generation
from tether.api.routes.responses import READ_ERRORS, WRITE_ERRORS, errors

router = APIRouter(prefix=V1)


@router.post(
    "/projects",
    response_model=WriteResult,
    status_code=201,
    responses={
        200: {"model": WriteResult, "description": "It existed already: nothing changed."},
        **errors(400, 403, 409),
    },
)
async def create_project(
    body: ProjectCreate, caller: Caller, store: StoreDep, response: Response
) -> WriteResult:
    result = await store.create_project(body.name, caller)
    if not result.changed:
        response.status_code = 200
    return result


@router.get("/projects", response_model=list[ProjectView], responses=errors())
async def list_projects(caller: Caller, store: StoreDep) -> list[ProjectView]:
    return await store.list_projects(caller)


@router.get("/projects/{name}", response_model=ProjectView, responses=READ_ERRORS)
async def get_project(
    name: NamePath, caller: Caller, store: StoreDep, response: Response
) -> ProjectView:
    view = await store.get_project(name, caller)
    response.headers["ETag"] = f'"{view.project.generation}"'
    return view


@router.delete(
    "/projects/{name}", response_model=WriteResult, status_code=202, responses=WRITE_ERRORS
)
async def destroy(
    name: NamePath,
    caller: Caller,
    store: StoreDep,
    if_match: IfMatch = None,
    delete_volumes: Annotated[
        bool,
        Query(
            description="Remove the project's volumes too, once its containers are gone "
            "(without it they are kept)."
        ),
    ] = False,
) -> WriteResult:
    return await store.destroy(
        name, caller, if_match=expected_generation(if_match), delete_volumes=delete_volumes
    )


@router.get("/projects/{name}/status", response_model=Status, responses=READ_ERRORS)
async def status(name: NamePath, caller: Caller, store: StoreDep) -> Status:
    view = await store.get_project(name, caller)
    return view.status or Status(project=name, phase="Pending")
