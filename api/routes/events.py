"""The events route: a project's recorded events, paged by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tether.api.appstate import StoreDep
from tether.api.auth import Caller
from tether.api.models import MAX_BIGINT, Event
from tether.api.routes import V1
from tether.api.routes.params import NamePath
from tether.api.routes.responses import READ_ERRORS

router = APIRouter(prefix=V1)


@router.get("/projects/{name}/events", response_model=list[Event], responses=READ_ERRORS)
async def events(
    name: NamePath,
    caller: Caller,
    store: StoreDep,
    after: Annotated[
        int, Query(ge=0, le=MAX_BIGINT, description="Only events with a larger id.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Event]:
    return await store.events(name, caller, after=after, limit=limit)
