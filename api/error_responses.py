"""How the API answers an error: one JSON shape (`ErrorBody`) for every refusal, whether a route,
the router (unknown path or method), validation or a middleware gives it."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from tether.api.errors import RateLimited, TetherError

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class ErrorBody(BaseModel):
    error: str
    message: str
    hint: str | None = None


def error_response(
    status: int,
    error: str,
    message: str,
    hint: str | None = None,
    *,
    retry_after_s: int | None = None,
) -> JSONResponse:
    body = ErrorBody(error=error, message=message, hint=hint).model_dump(exclude_none=True)
    if retry_after_s is None and status == 503:
        retry_after_s = 2
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return JSONResponse(body, status_code=status, headers=headers)


async def tether_error(_request: Request, exc: TetherError) -> JSONResponse:
    retry_after_s = exc.retry_after_s if isinstance(exc, RateLimited) else None
    return error_response(
        exc.status_code, exc.error, exc.message, exc.hint, retry_after_s=retry_after_s
    )


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Unknown routes and methods: the same JSON shape as every other error.
    try:
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        code = "http_error"
    response = error_response(
        exc.status_code, code, f"{exc.detail}: {request.method} {request.url.path}"
    )
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        response.headers["Allow"] = ", ".join(allowed_methods(request))
    return response


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path. Starlette's 405 names only the
    methods of the first route whose path matched, and a path served by several routes (GET and
    POST /v1/projects) would otherwise be answered with an `Allow` that omits some. Each method
    is tried against the routes as the router itself would (`matches`)."""
    routes = request.app.router.routes
    return [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(
        422,
        "invalid_request",
        _validation_message(exc),
        hint="see the API schema at /docs for the expected fields",
    )


def add_error_handlers(app: FastAPI) -> None:
    app.exception_handler(TetherError)(tether_error)
    app.exception_handler(StarletteHTTPException)(http_error)
    app.exception_handler(RequestValidationError)(invalid)
