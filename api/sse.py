"""Server-sent events: how the API's streams are framed on the wire.

Each message is `event: NAME` and one `data:` line of JSON, then a blank line. A comment line
(`: keep-alive`) goes out when nothing else has for a while, so that a client, and any proxy in
between, can tell a quiet stream from a dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from pydantic import BaseModel

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE = b": keep-alive\n\n"
CLEANUP_S = 5.0


def cleanup() -> anyio.CancelScope:
    """A scope for the `finally` of a stream: Starlette cancels a stream whose client went away
    through an anyio cancel scope, which cancels every later `await` too unless shielded."""
    return anyio.move_on_after(CLEANUP_S, shield=True)


def frame(event: str, data: BaseModel | dict[str, Any]) -> bytes:
    """One message; its data is one line of JSON (JSON never contains a raw line break)."""
    text = data.model_dump_json() if isinstance(data, BaseModel) else json.dumps(data)
    return f"event: {event}\ndata: {text}\n\n".encode()


async def with_keepalive(source: AsyncIterator[bytes], every_s: float) -> AsyncIterator[bytes]:
    """`source`'s messages, with a keep-alive comment after each `every_s` of silence."""

    async def following() -> bytes:
        return await anext(source)

    pending: asyncio.Task[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(following())
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            if not done:
                yield KEEPALIVE
                continue
            try:
                chunk = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            yield chunk
    finally:
        with cleanup():
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await pending
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
