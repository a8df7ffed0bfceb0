"""The request handling of the simplest writes (start, stop, restart): the API's most frequent
requests, served without FastAPI's per-request dependency solving, which cost more CPU than the
write's own SQL did (docs/benchmarks.md, item 6).

Such a route is still a FastAPI `APIRoute`: its parameters, dependencies, response model and
OpenAPI operation are declared as every route's are, and unchanged. Only how a request reaches
its endpoint differs: the four parameters it takes are resolved by the same functions FastAPI's
dependencies call (the bearer token, `tether.api.auth.caller_of`, the If-Match header read as a
`Header` parameter reads it), the endpoint runs, and its answer goes through the route's own
response model. A request off that path (a project name the path pattern refuses, a method the
route does not serve, dependency overrides set) is handed to FastAPI's own handling, which
answers it exactly as before.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

from fastapi.exceptions import ResponseValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from tether.api.auth import caller_of
from tether.api.errors import TetherError
from tether.api.models import PROJECT_NAME_PATTERN

PARAMETERS = ("name", "caller", "store", "if_match")
_NAME = re.compile(PROJECT_NAME_PATTERN)


class LeanWriteRoute(APIRoute):
    """A route whose endpoint takes exactly `name: NamePath, caller: Caller, store: StoreDep,
    if_match: IfMatch` (`tether.api.routes.params`), and nothing else."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        taken = tuple(inspect.signature(endpoint).parameters)
        if taken != PARAMETERS:
            raise TypeError(f"{endpoint.__name__} takes {taken}: a lean write takes {PARAMETERS}")
        super().__init__(path, endpoint, **kwargs)

    def serves(self, scope: Scope, path_params: dict[str, Any]) -> bool:
        """Whether this request, once routed here, takes the lean path."""
        name = path_params.get("name")
        return (
            (self.methods is None or scope["method"] in self.methods)
            and isinstance(name, str)
            and _NAME.fullmatch(name) is not None
            and not scope["app"].dependency_overrides
        )

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.serves(scope, scope["path_params"]):
            await self.write(scope, receive, send)
        else:
            await super().handle(scope, receive, send)

    async def write(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        store = scope["app"].state.store
        caller = await caller_of(request)
        result = await self.endpoint(
            name=scope["path_params"]["name"],
            caller=caller,
            store=store,
            if_match=request.headers.get("if-match"),
        )
        await self._answer(result)(scope, receive, send)

    def _answer(self, result: Any) -> Response:
        """What FastAPI answers for an endpoint's return value under a response model."""
        field = self.response_field
        assert field is not None, "a lean write declares its response model"
        value, errors = field.validate(result, {}, loc=("response",))
        if errors:
            raise ResponseValidationError(errors=errors, body=result)
        body = field.serialize_json(
            value,
            include=self.response_model_include,
            exclude=self.response_model_exclude,
            by_alias=self.response_model_by_alias,
            exclude_unset=self.response_model_exclude_unset,
            exclude_defaults=self.response_model_exclude_defaults,
            exclude_none=self.response_model_exclude_none,
        )
        return Response(body, status_code=self.status_code or 200, media_type="application/json")


class LeanDispatch:
    """Sends a request for a lean write straight to its route: FastAPI's router would find it
    only after trying every route before it, twice over its own router's (most of what a
    request cost between the middleware and the route). Innermost of the middleware, so a
    request passes every middleware the app has either way; a refusal (`TetherError`) is
    answered by the app's own handler for it, as the router's exception middleware would.

    Only requests the route serves on its lean path are sent; any other, and every request to
    another route, goes on to the router. That no route before a lean one matches its paths is
    what tests/integration/test_lean_writes.py checks against the app's router."""

    def __init__(self, app: ASGIApp, routes: Sequence[LeanWriteRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for route in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL and route.serves(scope, child["path_params"]):
                    scope.update(child)
                    scope.setdefault("router", scope["app"].router)
                    try:
                        await route.write(scope, receive, send)
                    except TetherError as exc:
                        handler = scope["app"].exception_handlers[TetherError]
                        response = await handler(Request(scope, receive, send), exc)
                        await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
