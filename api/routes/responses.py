"""What the `/v1` routes document besides their models (the error answers each can give), and the
server-sent events answer of the streaming routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from tether.api import sse
from tether.api.error_responses import ErrorBody

ERROR_MEANINGS = {
    400: "The request cannot be carried out as it is (see `error`).",
    401: "No valid token in the Authorization header (none, unknown, revoked or expired).",
    403: "The token is read-only: nothing was changed.",
    404: "No such project, deployment or webhook (or one the token may not see).",
    409: "The project name belongs to another owner.",
    412: "If-Match names another generation: nothing was changed.",
    413: "The request body is too large.",
    422: "The request is not valid.",
    429: "Too many failed authentications from this address: see Retry-After.",
    503: "A dependency (the database, Docker) is unavailable, or the server is stopping.",
}


def errors(*codes: int) -> dict[int | str, dict[str, object]]:
    """The error answers a /v1 route can give: those of every route (no valid token, too many
    failures, a body over the limit, a validation error, the database down) and `codes`."""
    every = (401, 413, 422, 429, 503)
    return {
        code: {"model": ErrorBody, "description": ERROR_MEANINGS[code]}
        for code in sorted({*every, *codes})
    }


WRITE_ERRORS = errors(400, 403, 404, 412)
READ_ERRORS = errors(404)


STREAM_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {sse.MEDIA_TYPE: {}}, "description": "Server-sent events."},
    **errors(404),
}


def events_stream(chunks: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(chunks, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
