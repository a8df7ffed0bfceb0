"""The volume routes: a project's named volumes as the operator last observed them, and their
backups (an export streamed out as tar, an import streamed in, checked whole, then written)."""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import StreamingResponse

from tether.api.appstate import StoreDep, StreamsDep
from tether.api.archives import VolumeArchives, check_archive
from tether.api.auth import Caller
from tether.api.errors import ArchivesUnavailable, ArchiveTooLarge
from tether.api.models import VOLUME_NAME_PATTERN, VolumeView
from tether.api.routes import V1
from tether.api.routes.params import NamePath
from tether.api.routes.responses import READ_ERRORS, errors

router = APIRouter(prefix=V1)
VolumePath = Annotated[str, Path(pattern=VOLUME_NAME_PATTERN, description="The volume's name.")]
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
ARCHIVE_ERRORS = errors(400, 404, 409, 413, 503)
# The import's path, whose body the app's body limit leaves to the route.
ARCHIVE_PATH = re.compile(rf"{V1}/projects/[a-z][a-z0-9-]*/volumes/[a-z][a-z0-9-]*/archive")


@router.get("/projects/{name}/volumes", response_model=list[VolumeView], responses=READ_ERRORS)
async def volumes(name: NamePath, caller: Caller, store: StoreDep) -> list[VolumeView]:
    return await store.volumes(name, caller)


def _archives(source: VolumeArchives | None) -> VolumeArchives:
    if source is None:
        raise ArchivesUnavailable(
            "this API server has no Docker access, so it cannot read or write volumes",
            hint="run the export or import against a tether API that has (`tether up`, or "
            "`tether api` with TETHER_DOCKER_URL pointing at the engine)",
        )
    return source


def _limit_text(limit: int) -> str:
    return f"{limit} bytes (TETHER_VOLUME_ARCHIVE_MAX_BYTES)"


@router.get(
    "/projects/{name}/volumes/{volume}/archive",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}}}, **ARCHIVE_ERRORS},
)
async def export_volume(
    name: NamePath, volume: VolumePath, caller: Caller, store: StoreDep, streams: StreamsDep
) -> StreamingResponse:
    """The volume as a tar archive (entries under `VOLUME/`), streamed; the project must be
    stopped."""
    archives = _archives(streams.archives)
    target = await store.archive_target(name, volume, caller)
    limit = streams.archive_limit
    if target.size_bytes is not None and target.size_bytes > limit:
        raise ArchiveTooLarge(
            f"volume {volume!r} holds {target.size_bytes} bytes, more than the export limit of "
            f"{_limit_text(limit)}",
            hint="raise the limit on the server, or copy the data out another way",
        )
    chunks = archives.export(name, volume, target.image)
    first = await anext(chunks, b"")  # Docker's refusals answer before the response starts

    async def body() -> AsyncIterator[bytes]:
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    return StreamingResponse(
        body(),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{name}-{volume}.tar"'},
    )


@router.put(
    "/projects/{name}/volumes/{volume}/archive",
    status_code=204,
    responses=ARCHIVE_ERRORS,
    openapi_extra={
        "requestBody": {
            "description": "A tar archive (any content type is taken as one).",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "required": True,
        },
    },
)
async def import_volume(
    name: NamePath,
    volume: VolumePath,
    caller: Caller,
    store: StoreDep,
    streams: StreamsDep,
    request: Request,
) -> None:
    """Write a tar archive (entries under `VOLUME/`, as an export makes them) into the volume,
    over what it holds; the project must be stopped. The archive is checked whole first: a bad
    one is refused and the volume left unchanged."""
    archives = _archives(streams.archives)
    target = await store.archive_target(name, volume, caller)
    limit = streams.archive_limit
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ArchiveTooLarge(
                    f"the archive is larger than the import limit of {_limit_text(limit)}; "
                    "nothing was imported",
                    hint="raise the limit on the server, or import the data in parts",
                )
            await asyncio.to_thread(spool.write, chunk)
        spool.seek(0)
        await asyncio.to_thread(check_archive, spool, volume)
        await archives.import_(name, target.owner, volume, target.image, spool)
