"""The volume routes: a project's named volumes, as the operator last observed them."""

from __future__ import annotations

from fastapi import APIRouter

from tether.api.appstate import StoreDep
from tether.api.auth import Caller
from tether.api.models import VolumeView
from tether.api.routes import V1
from tether.api.routes.params import NamePath
from tether.api.routes.responses import READ_ERRORS

router = APIRouter(prefix=V1)


@router.get("/projects/{name}/volumes", response_model=list[VolumeView], responses=READ_ERRORS)
async def volumes(name: NamePath, caller: Caller, store: StoreDep) -> list[VolumeView]:
    return await store.volumes(name, caller)
