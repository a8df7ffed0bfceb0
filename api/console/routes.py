"""The console's routes: its pages (`/`, `/projects/NAME`), its static files, and its session.

The pages are one HTML shell; the scripts in `static/` draw them from the `/v1` API, as a second
client beside the CLI. None of these routes is in the OpenAPI schema: they are not the API.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tether.api.console.sessions import (
    SESSION_TTL_S,
    SessionAuth,
    Sessions,
    cookie_header,
    session_body,
    session_id_of,
)
from tether.api.errors import NotFound, TetherError, Unauthorized
from tether.api.models import PROJECT_NAME_PATTERN, Principal
from tether.api.store import Store

PrincipalOf = Callable[[Request, HTTPAuthorizationCredentials | None], Awaitable[Principal]]
STATIC = resources.files("tether.api.console") / "static"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Nothing is fetched from anywhere but this server, no page may frame the console, and no inline
# script runs (the pages have none).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
BEARER = HTTPBearer(auto_error=False, scheme_name="token")


def _static_files() -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    for entry in STATIC.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in TYPES:
            files[entry.name] = (entry.read_bytes(), TYPES[suffix])
    return files


def install(
    app: FastAPI, store: Store, principal_of: PrincipalOf, *, session_ttl_s: float = SESSION_TTL_S
) -> Sessions:
    """Add the console to `app`: its routes, and the middleware that reads its session cookie.
    `principal_of` is the API's own authentication (rate-limited, as for every route)."""
    sessions = Sessions(ttl_s=session_ttl_s)
    app.state.console_sessions = sessions
    app.add_middleware(SessionAuth, sessions=sessions)
    router = APIRouter(include_in_schema=False)
    _add_pages(router, store, principal_of)
    _add_sessions(router, sessions, principal_of)
    app.include_router(router)
    return sessions


def _add_pages(router: APIRouter, store: Store, principal_of: PrincipalOf) -> None:
    """The page shell (one for every page: the script draws it) and its static files."""
    files = _static_files()
    shell = files["index.html"][0]

    def page(status: int = 200) -> Response:
        headers = {"Cache-Control": "no-store", **SECURITY_HEADERS}
        return Response(shell, status_code=status, media_type=TYPES[".html"], headers=headers)

    @router.get("/")
    async def projects_page() -> Response:
        return page()

    @router.get("/projects/{name}")
    async def project_page(
        request: Request,
        name: Annotated[str, Path()],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> Response:
        """The shell, answered 404 when the signed-in owner may not see this project (or there is
        no such project): the page then says so."""
        if credentials is None:
            return page()
        try:
            caller = await principal_of(request, credentials)
        except TetherError:
            return page()
        if not _is_name(name):
            return page(404)
        try:
            await store.get_project(name, caller)
        except NotFound:
            return page(404)
        return page()

    @router.get("/console/static/{file}")
    async def static(file: str) -> Response:
        found = files.get(file)
        if found is None:
            raise NotFound(f"no console file {file!r}")
        body, media_type = found
        headers = {"Cache-Control": "no-cache", **SECURITY_HEADERS}
        return Response(body, media_type=media_type, headers=headers)


def _add_sessions(router: APIRouter, sessions: Sessions, principal_of: PrincipalOf) -> None:
    """Signing in (a token for a session cookie), who is signed in, and signing out."""

    @router.get("/console/session")
    async def current_session(request: Request) -> JSONResponse:
        """Who is signed in, and the anti-forgery token the page sends with every write."""
        session_id = session_id_of(dict(request.scope["headers"]))
        session = sessions.get(session_id) if session_id else None
        if session is None:
            raise Unauthorized("not signed in", hint="sign in with an API token")
        return JSONResponse(session_body(session), headers={"Cache-Control": "no-store"})

    @router.post("/console/session")
    async def sign_in(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> JSONResponse:
        """Sign in: the token in `Authorization: Bearer`, checked as every API request's is."""
        # No page on another site can send an Authorization header here (that needs a CORS
        # preflight, which the API never grants): a sign-in cannot be forged.
        caller = await principal_of(request, credentials)
        assert credentials is not None  # principal_of refuses a request without a token
        session_id, session = sessions.open(credentials.credentials.strip(), caller)
        secure = request.url.scheme == "https"
        return JSONResponse(
            session_body(session),
            headers={
                "Set-Cookie": cookie_header(session_id, int(sessions.ttl_s), secure=secure),
                "Cache-Control": "no-store",
            },
        )

    @router.delete("/console/session")
    async def sign_out(request: Request) -> JSONResponse:
        """Sign out (CSRF-checked like every write): the session ends and its cookie is removed."""
        session_id = session_id_of(dict(request.scope["headers"]))
        if session_id:
            sessions.close(session_id)
        secure = request.url.scheme == "https"
        return JSONResponse(
            {"message": "signed out"},
            headers={"Set-Cookie": cookie_header("", 0, secure=secure)},
        )


def _is_name(name: str) -> bool:
    return re.fullmatch(PROJECT_NAME_PATTERN, name) is not None
