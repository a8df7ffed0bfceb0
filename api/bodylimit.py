"""The request body limit: an ASGI middleware that refuses bodies over a size with 413."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.api.error_responses import error_response


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, whether or not they declare a length;
    PUTs to a path that `streamed` matches in full reach their route unread (it limits them)."""

    def __init__(self, app: ASGIApp, limit: int, streamed: re.Pattern[str] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streamed = self.streamed
        if scope["type"] != "http" or (
            streamed is not None and scope["method"] == "PUT" and streamed.fullmatch(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        declared = None
        chunked = False
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value
            elif key == b"transfer-encoding":
                chunked = True
        if not chunked and (declared is None or declared.isdigit()):
            # The server frames an HTTP/1.1 body by its declared length (none declared: there is
            # no body), so the app can read no more than that: nothing to count.
            if declared is not None and int(declared) > self.limit:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        # Read the whole body (at most `limit` bytes) before the app sees any of it: a body sent
        # without a length (chunked) is refused as soon as it passes the limit. Raising from a
        # wrapped `receive` instead would not work: FastAPI turns any error while reading the
        # body into a 400 "error parsing the body".
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: there is nobody to answer
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "body_too_large",
            f"the request body is larger than {self.limit} bytes",
            hint="send a smaller deployment spec (environment values are limited to 32 KiB each)",
        )
        await response(scope, receive, send)
