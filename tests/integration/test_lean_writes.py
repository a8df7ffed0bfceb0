"""The start, stop and restart routes skip FastAPI's dependency solving (`LeanWriteRoute`): every
answer they give, success or refusal, is the one FastAPI's own handling gives for the same
request. Two servers on one store, one with a dependency override (which sends every request
through FastAPI's handling), get the same requests on twin projects."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from support import serving

from tether.api.app import create_app
from tether.api.appstate import _store
from tether.api.errors import TetherError
from tether.api.models import DeploymentSpec, Principal
from tether.api.routes import lifecycle
from tether.api.routes.leanwrite import LeanWriteRoute
from tether.api.store import Store

ALICE = Principal(owner="alice")
SPEC = DeploymentSpec(image="busybox-httpd:latest", port=8080)
LEAN, FULL = "lqz-", "fqz-"  # the twin projects' prefixes: same length, so the same answer lengths


@pytest.fixture
async def servers(store: Store) -> AsyncIterator[dict[str, str]]:
    lean = create_app(store)
    full = create_app(store)

    async def same_store() -> Store:
        return store

    full.dependency_overrides[_store] = same_store
    async with serving(lean) as lean_url, serving(full) as full_url:
        yield {LEAN: lean_url, FULL: full_url}


def test_the_simple_writes_are_lean_routes() -> None:
    routes = {
        (route.path, type(route))
        for route in lifecycle.router.routes
        if getattr(route, "path", "").endswith(("/start", "/stop", "/restart"))
    }
    assert routes == {
        (f"/v1/projects/{{name}}/{verb}", LeanWriteRoute) for verb in ("start", "stop", "restart")
    }


def _comparable(response: httpx.Response, prefix: str) -> tuple[Any, ...]:
    body = json.loads(response.text.replace(prefix, "X-"))
    project = body.get("project") if isinstance(body, dict) else None
    if isinstance(project, dict):
        for volatile in ("created_at", "updated_at", "host_port"):
            project.pop(volatile)
    headers = sorted((k, v) for k, v in response.headers.items() if k not in {"date"})
    return response.status_code, headers, body


async def test_lean_answers_are_fastapis(store: Store, servers: dict[str, str]) -> None:
    token = await store.create_token("alice")
    read_only = await store.create_token("alice", read_only=True)
    bob = await store.create_token("bob")
    for prefix in servers:
        await store.create_project(f"{prefix}shop", ALICE)
        deployed, _ = await store.deploy(f"{prefix}shop", SPEC, ALICE, start=True)
        await store.create_project(f"{prefix}empty", ALICE)
    stopped = deployed.project.generation + 1  # after the first request
    alice = {"Authorization": f"Bearer {token}"}
    requests: list[tuple[str, str, str, dict[str, str]]] = [
        ("POST", "stop", "shop", alice),  # changed
        ("POST", "stop", "shop", alice),  # already stopped
        ("POST", "start", "shop", {**alice, "If-Match": '"999"'}),  # another generation
        ("POST", "start", "shop", {**alice, "If-Match": "soon"}),  # not a generation
        ("POST", "start", "shop", {**alice, "If-Match": f'W/"{stopped}"'}),  # the current one
        ("POST", "start", "empty", alice),  # no deployment
        ("POST", "start", "ghost", alice),  # no such project
        ("POST", "start", "shop", {}),  # no token
        ("POST", "start", "shop", {"Authorization": "Basic abc"}),  # not a bearer token
        ("POST", "start", "shop", {"Authorization": "Bearer nope"}),  # unknown token
        ("POST", "stop", "shop", {"Authorization": f"Bearer {bob}"}),  # not bob's
        ("POST", "stop", "shop", {"Authorization": f"Bearer {read_only}"}),  # read-only
        ("POST", "restart", "shop", alice),
        ("POST", "restart", "empty", alice),
        ("POST", "start", "Bad_Name", alice),  # refused by the path pattern
        ("GET", "stop", "shop", alice),  # not a method of the route
    ]
    answers: dict[str, list[tuple[Any, ...]]] = {}
    for prefix, url in servers.items():
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            answers[prefix] = []
            for method, verb, name, headers in requests:
                target = name if name == "Bad_Name" else f"{prefix}{name}"
                response = await http.request(
                    method, f"/v1/projects/{target}/{verb}", headers=headers
                )
                answers[prefix].append(_comparable(response, prefix))
    statuses = [answer[0] for answer in answers[LEAN]]
    assert statuses == [
        *(200, 200, 412, 400, 200, 400, 404),
        *(401, 401, 401, 404, 403),
        *(200, 400, 422, 405),
    ]
    for asked, lean, full in zip(requests, answers[LEAN], answers[FULL], strict=True):
        assert lean == full, asked


# Names that are also literal segments of other routes' paths, and ordinary ones.
NAMES = ["shop", "a", "x" * 63, "status", "events", "deployments", "logs", "watch", "volumes"]
NAMES += ["webhooks", "nodes", "start", "stop", "restart", "rollback", "projects", "v1"]


@pytest.mark.parametrize("name", NAMES)
async def test_the_router_itself_picks_the_lean_route(name: str) -> None:
    """`LeanDispatch` sends these requests to their lean route without the router: the router,
    asked, picks the same route (no route before it matches)."""
    app = create_app(None)  # type: ignore[arg-type]  # refused before any store is needed
    lean = [r for r in lifecycle.router.routes if isinstance(r, LeanWriteRoute)]
    for route in lean:
        path = route.path.replace("{name}", name)
        scope: dict[str, Any] = {
            **{"type": "http", "method": "POST", "path": path, "raw_path": path.encode()},
            **{"root_path": "", "query_string": b"", "headers": [], "app": app},
            **{"client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": {}},
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(_message: Any) -> None:
            raise AssertionError("refused before answering: no token")

        with pytest.raises(TetherError, match="missing API token"):
            await app.router(scope, receive, send)
        assert scope["route"] is route, (path, scope["route"])


async def test_lean_writes_are_counted_by_route_template(
    store: Store, servers: dict[str, str]
) -> None:
    token = await store.create_token("alice")
    await store.create_project("shop", ALICE)
    await store.deploy("shop", SPEC, ALICE, start=True)

    def counted(status: str) -> float:
        labels = {"method": "POST", "route": "/v1/projects/{name}/stop", "status": status}
        return REGISTRY.get_sample_value("tether_api_requests_total", labels) or 0.0

    before = {status: counted(status) for status in ("200", "401", "404")}
    async with httpx.AsyncClient(base_url=servers[LEAN], timeout=10) as http:
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await http.post("/v1/projects/shop/stop", headers=bearer)).status_code == 200
        assert (await http.post("/v1/projects/ghost/stop", headers=bearer)).status_code == 404
        assert (await http.post("/v1/projects/shop/stop")).status_code == 401
    assert {status: counted(status) - before[status] for status in before} == {
        "200": 1,
        "401": 1,
        "404": 1,
    }
