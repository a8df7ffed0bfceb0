"""The nodes route: the swarm runtime's cluster, as the operator last listed it (read-only)."""

from __future__ import annotations

from fastapi import APIRouter

from tether.api.appstate import StoreDep
from tether.api.auth import Caller
from tether.api.models import ClusterNode
from tether.api.routes import V1
from tether.api.routes.responses import READ_ERRORS

router = APIRouter(prefix=V1)


@router.get("/nodes", response_model=list[ClusterNode], responses=READ_ERRORS)
async def nodes(caller: Caller, store: StoreDep) -> list[ClusterNode]:
    """Every node with its state and availability (empty under the engine runtime, which has
    one Docker engine and no nodes). Any token may read it: it names no project."""
    del caller  # authenticated, that is all
    return await store.nodes()
