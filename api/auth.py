"""Who is calling: the API token in `Authorization: Bearer <token>`, made a `Principal` (the
`Caller` dependency), with failed authentications limited per client address. A read-only token
may read and watch; every other method it sends is refused (403) before the route runs."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tether.api.accesslog import note_token
from tether.api.appstate import AuthLimiterDep, StoreDep
from tether.api.errors import RateLimited, ReadOnlyToken, Unauthorized
from tether.api.models import Principal, TokenRefusal
from tether.api.ratelimit import FailureLimiter

log = structlog.get_logger("tether.api")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token (`tether token create --owner NAME`) in `Authorization: Bearer "
    "<token>`, and nowhere else.",
)


def _refuse_if_limited(limiter: FailureLimiter | None, address: str) -> None:
    wait = limiter.retry_after(address) if limiter is not None else None
    if wait is not None:
        raise RateLimited(
            f"too many failed authentications from {address}; try again in {wait} s",
            hint="check the token: `tether login`, or TETHER_TOKEN",
            retry_after_s=wait,
        )


def _count_failure(limiter: FailureLimiter | None, address: str) -> None:
    if limiter is None:
        return
    limiter.failed(address)
    if limiter.retry_after(address) is not None:
        log.warning(
            "failed authentications: client refused for a while",
            client=address,
            burst=limiter.burst,
            window_s=limiter.window_s,
        )


async def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    store: StoreDep,
    limiter: AuthLimiterDep,
) -> Principal:
    """The caller, from `Authorization: Bearer <token>`: the only place a token is read from (a
    token in the query string or a cookie ends up in logs, histories and caches; it is ignored).

    A client address with too many failed authentications is refused (429) before its token is
    looked at (`tether.api.ratelimit`); successful ones are never limited."""
    address = request.client.host if request.client else "unknown"
    _refuse_if_limited(limiter, address)
    token = credentials.credentials.strip() if credentials is not None else ""
    if not token:
        raise Unauthorized(
            "missing API token",
            hint="send 'Authorization: Bearer <token>' (tokens are read from that header only); "
            "create one with `tether token create --owner NAME`",
        )
    found = await store.authenticate(token)
    if isinstance(found, TokenRefusal):
        _count_failure(limiter, address)
        raise Unauthorized(found.message, hint=_REFUSAL_HINTS[found.reason])
    note_token(request.scope, found.token_id)
    return found


_REFUSAL_HINTS = {
    "unknown": "create a new one with `tether token create`",
    "revoked": "ask an admin for a new token (`tether token create`), then `tether login`",
    "expired": "ask an admin for a new token (`tether token create --expires-in ...`), then "
    "`tether login`",
}


async def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    store: StoreDep,
    limiter: AuthLimiterDep,
) -> Principal:
    """The caller of a /v1 route: a read-only token may only read."""
    principal = await _principal(request, credentials, store, limiter)
    if principal.read_only and request.method not in READ_METHODS:
        raise ReadOnlyToken(
            f"token {principal.token_id} is read-only: it may read and watch, not "
            f"{request.method} {request.url.path}; nothing was changed",
            hint="use a token created without --read-only for writes",
        )
    return principal


async def caller_of(request: Request) -> Principal:
    """The `Caller` dependency outside FastAPI's dependency solving: for the lean write routes
    (`tether.api.routes.leanwrite`), with the same token parsing, checks and refusals."""
    state = request.app.state
    return await _caller(request, await BEARER(request), state.store, state.auth_limiter)


async def principal_of(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    """The same check outside FastAPI's dependencies: for the console's session sign-in."""
    state = request.app.state
    return await _principal(request, credentials, state.store, state.auth_limiter)


# Module level on purpose: with postponed annotations FastAPI resolves a route's annotations in
# its module's globals, so an alias local to a function would silently become a query parameter.
Caller = Annotated[Principal, Depends(_caller)]
