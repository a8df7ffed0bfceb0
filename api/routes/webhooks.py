"""The webhook routes: add (its secret answered once), list, remove, and a hook's deliveries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from tether.api.appstate import StoreDep
from tether.api.auth import Caller
from tether.api.models import MAX_BIGINT
from tether.api.routes import V1
from tether.api.routes.responses import READ_ERRORS, errors
from tether.api.webhooks import (
    Delivery,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookRemoved,
)

router = APIRouter(prefix=V1)
HookId = Annotated[int, Path(ge=1, le=MAX_BIGINT, description="The webhook's id.")]


@router.post("/webhooks", response_model=WebhookCreated, status_code=201, responses=errors(400))
async def add_webhook(body: WebhookCreate, caller: Caller, store: StoreDep) -> WebhookCreated:
    return await store.create_webhook(body, caller)


@router.get("/webhooks", response_model=list[Webhook], responses=errors())
async def list_webhooks(caller: Caller, store: StoreDep) -> list[Webhook]:
    return await store.webhooks(caller)


@router.delete("/webhooks/{hook}", response_model=WebhookRemoved, responses=READ_ERRORS)
async def remove_webhook(hook: HookId, caller: Caller, store: StoreDep) -> WebhookRemoved:
    return await store.remove_webhook(hook, caller)


@router.get("/webhooks/{hook}/deliveries", response_model=list[Delivery], responses=READ_ERRORS)
async def deliveries(
    hook: HookId,
    caller: Caller,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="The latest this many.")] = 100,
) -> list[Delivery]:
    return await store.deliveries(hook, caller, limit=limit)
