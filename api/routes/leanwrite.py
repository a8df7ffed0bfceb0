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
from collections.abc import Callable
from typing import Any

from fastapi.exceptions import ResponseValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tether.api.auth import caller_of
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

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["path_params"].get("name")
        app = scope["app"]
        if (
            (self.methods is not None and scope["method"] not in self.methods)
            or not isinstance(name, str)
            or _NAME.fullmatch(name) is None
            or app.dependency_overrides
        ):
            await super().handle(scope, receive, send)
            return
        request = Request(scope, receive, send)
        caller = await caller_of(request)
        result = await self.endpoint(
            name=name,
            caller=caller,
            store=app.state.store,
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
