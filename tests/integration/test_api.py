"""The HTTP API, through a real server on loopback: validation and its JSON errors, body limits,
auth isolation, idempotent writes, generations, If-Match, NOTIFY, and 20 concurrent writers.

Every error answer has the same shape: `error` (a stable code), `message` (what is wrong) and, where
one helps, `hint` (what to do). No request is ever answered 409 because a project is already in
the asked state.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from support import serving

from tether.api.app import create_app
from tether.api.store import PortRange, Store

SHOP = "shop"
SPEC: dict[str, Any] = {"image": "busybox-httpd:latest", "port": 8080}
BODY_LIMIT = 64 * 1024  # the limit of both test servers (conftest's api_url and `shared` below)
MISSING: Any = object()  # a spec override that removes the field

Route = tuple[str, str, dict[str, Any] | None]
OpenClient = Callable[..., httpx.AsyncClient]


# Helpers


def assert_error(
    response: httpx.Response, status: int, error: str, *fragments: str, hint: bool = True
) -> dict[str, Any]:
    """The answer is `status` with exactly the JSON error shape, and its message names
    `fragments`."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ({"error", "message", "hint"} if hint else {"error", "message"}), body
    assert body["error"] == error, body
    assert isinstance(body["message"], str), body
    if hint:
        assert isinstance(body["hint"], str), body
        assert body["hint"], body
    for fragment in fragments:
        assert fragment in body["message"], (fragment, body)
    return body


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def spec(**overrides: Any) -> dict[str, Any]:
    return {k: v for k, v in {**SPEC, **overrides}.items() if v is not MISSING}


async def create(http: httpx.AsyncClient, name: str = SHOP) -> dict[str, Any]:
    result: dict[str, Any] = ok(await http.post("/v1/projects", json={"name": name}), 201)
    return result


def encode(body: Any) -> bytes:
    """JSON in UTF-8; a string that is not UTF-8 (an unpaired surrogate) goes \\u-escaped."""
    try:
        return json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(body).encode()


async def deploy(
    http: httpx.AsyncClient, name: str = SHOP, body: Any = None, **params: str
) -> httpx.Response:
    return await http.post(
        f"/v1/projects/{name}/deployments",
        content=encode(SPEC if body is None else body),
        headers={"Content-Type": "application/json"},
        params=params,
    )


async def write(http: httpx.AsyncClient, verb: str, name: str = SHOP, **kw: Any) -> httpx.Response:
    """POST a desired-state write: start, stop, restart or rollback."""
    return await http.post(f"/v1/projects/{name}/{verb}", **kw)


async def project(http: httpx.AsyncClient, name: str = SHOP) -> dict[str, Any]:
    result: dict[str, Any] = ok(await http.get(f"/v1/projects/{name}"))["project"]
    return result


async def deployments(http: httpx.AsyncClient, name: str = SHOP) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = ok(await http.get(f"/v1/projects/{name}/deployments"))
    return result


async def desired_events(http: httpx.AsyncClient, name: str = SHOP) -> list[dict[str, Any]]:
    events = ok(await http.get(f"/v1/projects/{name}/events", params={"limit": 1000}))
    return [e for e in events if e["kind"] == "desired"]


async def everything(http: httpx.AsyncClient, name: str = SHOP) -> dict[str, Any]:
    """All its owner can read about a project, to prove that a refused request changed nothing."""
    return {
        "view": ok(await http.get(f"/v1/projects/{name}")),
        "deployments": await deployments(http, name),
        "events": ok(await http.get(f"/v1/projects/{name}/events")),
    }


# Fixtures


@dataclass(frozen=True)
class Shared:
    url: str
    alice: str
    client: httpx.AsyncClient


@pytest.fixture(scope="module")
async def shared(postgres_url: str, template_url: str) -> AsyncIterator[Shared]:
    """One database and API server for this module's validation and auth-refusal cases.

    Those requests are refused before any write, and each case uses a project of its own (the
    `name` fixture), so a fresh database and server per case (conftest's `client`) would only add
    a third of a second to each of about a hundred cases.
    """
    database = f"v_{uuid.uuid4().hex[:12]}"
    template = urlsplit(template_url).path.lstrip("/")
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f"CREATE DATABASE {database} TEMPLATE {template}")
    store = await Store.connect(
        urlsplit(postgres_url)._replace(path=f"/{database}").geturl(), PortRange(19000, 19999)
    )
    try:
        async with serving(create_app(store, max_body_bytes=BODY_LIMIT)) as url:
            alice = await store.create_token("alice")
            async with httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {alice}"}, timeout=10
            ) as client:
                yield Shared(url, alice, client)
    finally:
        await store.close()
        await admin.execute(f"DROP DATABASE {database} WITH (FORCE)")
        await admin.close()


@pytest.fixture
def vclient(shared: Shared) -> httpx.AsyncClient:
    """Alice's client on the shared server (validation and refusal cases only)."""
    return shared.client


@pytest.fixture
def name() -> str:
    """A project name of this test's own on the shared server."""
    return f"p{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def open_client() -> AsyncIterator[OpenClient]:
    """Opens clients with a given Authorization header (or none); closed when the test ends."""
    opened: list[httpx.AsyncClient] = []

    def open_(url: str, authorization: str | None = None) -> httpx.AsyncClient:
        headers = {} if authorization is None else {"Authorization": authorization}
        http = httpx.AsyncClient(base_url=url, headers=headers, timeout=10)
        opened.append(http)
        return http

    yield open_
    for http in opened:
        await http.aclose()


# Validation: project names


@pytest.mark.parametrize("new", ["a", "my-shop-2", "a" * 63, "x-"])
async def test_project_name_accepted(vclient: httpx.AsyncClient, new: str) -> None:
    result = await create(vclient, new)
    assert result["project"]["name"] == new
    assert result["changed"] is True


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("a" * 64, id="64 characters"),
        pytest.param("Shop", id="uppercase"),
        pytest.param("1shop", id="leading digit"),
        pytest.param("-shop", id="leading hyphen"),
        pytest.param("sh_op", id="underscore"),
        pytest.param("sh.op", id="dot"),
        pytest.param("shöp", id="non-ASCII"),
        pytest.param("", id="empty"),
        pytest.param("shop\n", id="trailing newline"),
        pytest.param("shop ", id="trailing space"),
    ],
)
async def test_project_name_refused(vclient: httpx.AsyncClient, bad: str) -> None:
    response = await vclient.post("/v1/projects", json={"name": bad})
    assert_error(response, 422, "invalid_request", "name: String should match pattern")
    assert bad not in [v["project"]["name"] for v in ok(await vclient.get("/v1/projects"))]


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        pytest.param({}, ("name", "required"), id="missing"),
        pytest.param({"name": 5}, ("name", "string"), id="not a string"),
        pytest.param({"name": "x", "owner": "bob"}, ("owner", "Extra inputs"), id="extra field"),
        pytest.param(["x"], ("body",), id="not an object"),
    ],
)
async def test_project_create_body_refused(
    vclient: httpx.AsyncClient, body: Any, fragments: tuple[str, ...]
) -> None:
    assert_error(await vclient.post("/v1/projects", json=body), 422, "invalid_request", *fragments)


async def test_malformed_json_refused(vclient: httpx.AsyncClient) -> None:
    response = await vclient.post(
        "/v1/projects", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert_error(response, 422, "invalid_request", "JSON")


async def test_invalid_name_in_path_refused(vclient: httpx.AsyncClient) -> None:
    response = await vclient.get("/v1/projects/Shop")
    assert_error(response, 422, "invalid_request", "name", "pattern")
    assert_error(await write(vclient, "start", "1x"), 422, "invalid_request", "name", "pattern")


# Validation: deployment specs

DIGEST = "sha256:" + "0123456789abcdef" * 4

GOOD_SPECS: dict[str, dict[str, Any]] = {
    "plain image": {"image": "nginx"},
    "tagged": {"image": "nginx:1.25"},
    "registry with port and path": {"image": "registry.example.com:5000/team/app:v2"},
    "digest": {"image": f"app@{DIGEST}"},
    "tag and digest": {"image": f"ghcr.io/org/app:1.0-rc.1@{DIGEST}"},
    "local image": {"image": "localhost/busybox-httpd:latest"},
    "image of 255 characters": {"image": "a" * 255},
    "separators": {"image": "my_org/my__app-x.y:T_1.2"},
    "command": {"image": "nginx", "command": ["sh", "-c", "exec httpd -f"]},
    "env": {"image": "nginx", "env": {"A": "1", "_b2": "", "LONG": "x" * 32 * 1024}},
    "env value of 32 KiB in UTF-8": {"image": "nginx", "env": {"E": "é" * 16 * 1024}},
    "200 env vars": {"image": "nginx", "env": {f"V{i}": "x" for i in range(200)}},
    "port 1": {"image": "nginx", "port": 1},
    "port 65535": {"image": "nginx", "port": 65535},
    "no port": {"image": "nginx", "port": None},
    "http health": {"image": "nginx", "port": 80, "health": {"type": "http", "path": "/healthz"}},
    "http health default path": {"image": "nginx", "port": 80, "health": {"type": "http"}},
    "http health query": {
        "image": "nginx",
        "port": 80,
        "health": {"type": "http", "path": "/?a=b"},
    },
    "tcp health": {"image": "nginx", "port": 80, "health": {"type": "tcp"}},
    "health bounds low": {
        "image": "nginx",
        "port": 80,
        "health": {"type": "tcp", "interval_s": 0.1, "timeout_s": 0.1},
    },
    "health bounds high": {
        "image": "nginx",
        "port": 80,
        "health": {"type": "tcp", "interval_s": 300, "timeout_s": 60},
    },
    "deadline and grace low": {"image": "nginx", "ready_deadline_s": 1, "stop_grace_s": 0},
    "deadline and grace high": {"image": "nginx", "ready_deadline_s": 3600, "stop_grace_s": 300},
    "limits": {"image": "nginx", "memory_mb": 4, "cpus": 0.5},
}


@pytest.mark.parametrize("body", GOOD_SPECS.values(), ids=GOOD_SPECS.keys())
async def test_deployment_spec_accepted(
    vclient: httpx.AsyncClient, name: str, body: dict[str, Any]
) -> None:
    await create(vclient, name)
    result = ok(await deploy(vclient, name, body), 201)
    stored = ok(await vclient.get(f"/v1/projects/{name}/deployments/1"))
    assert stored == result["deployment"]
    defaults = {
        "command": None,
        "env": {},
        "port": None,
        "health": None,
        "ready_deadline_s": 120,
        "stop_grace_s": 10,
        "memory_mb": None,
        "cpus": None,
    }
    health = body.get("health")
    if health is not None:  # defaults filled in
        path = {"path": "/"} if health["type"] == "http" else {}  # a tcp check has none
        health = {**path, "interval_s": 2.0, "timeout_s": 2.0, **health}
    assert {k: stored[k] for k in ["image", *defaults]} == {**defaults, **body, "health": health}


BAD_SPECS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    # image references
    "image missing": ({"image": MISSING}, ("image", "required")),
    "image not a string": ({"image": 5}, ("image", "string")),
    "image empty": ({"image": ""}, ("image", "not a Docker image reference")),
    "image uppercase": ({"image": "Nginx"}, ("image", "'Nginx' is not a Docker image reference")),
    "image empty tag": ({"image": "nginx:"}, ("image", "not a Docker image reference")),
    "image tag only": ({"image": ":latest"}, ("image", "not a Docker image reference")),
    "image double colon": ({"image": "nginx::1"}, ("image", "not a Docker image reference")),
    "image space": ({"image": "my app"}, ("image", "not a Docker image reference")),
    "image leading dash": ({"image": "-nginx"}, ("image", "not a Docker image reference")),
    "image trailing newline": ({"image": "nginx\n"}, ("image", "not a Docker image reference")),
    "image url": ({"image": "https://r.example.com/app"}, ("image", "not a Docker image")),
    "image short digest": ({"image": "app@sha256:abc"}, ("image", "not a Docker image")),
    "image tag too long": ({"image": "app:" + "t" * 129}, ("image", "not a Docker image")),
    "image too long": ({"image": "a" * 256}, ("image", "256 characters", "longer than 255")),
    # env
    "env key leading digit": ({"env": {"1X": "v"}}, ("env", "name '1X' is invalid")),
    "env key dash": ({"env": {"A-B": "v"}}, ("env", "name 'A-B' is invalid")),
    "env key space": ({"env": {"A B": "v"}}, ("env", "name 'A B' is invalid")),
    "env key empty": ({"env": {"": "v"}}, ("env", "name '' is invalid")),
    "env key equals": ({"env": {"A=B": "v"}}, ("env", "name 'A=B' is invalid")),
    "env key trailing newline": ({"env": {"A\n": "v"}}, ("env", "name 'A\\n' is invalid")),
    "env too many": (
        {"env": {f"V{i}": "x" for i in range(201)}},
        ("env", "at most 200 environment variables"),
    ),
    "env value over 32 KiB": (
        {"env": {"BIG": "x" * (32 * 1024 + 1)}},
        ("env", "'BIG' is longer than 32 KiB"),
    ),
    "env value over 32 KiB in UTF-8": (
        {"env": {"BIG": "é" * (16 * 1024 + 1)}},
        ("env", "'BIG' is longer than 32 KiB"),
    ),
    "env value NUL": ({"env": {"A": "x\x00y"}}, ("env", "'A' contains a NUL byte")),
    "env value unpaired surrogate": ({"env": {"A": "\ud800"}}, ("env", "'A'", "surrogate")),
    "env value not a string": ({"env": {"A": 5}}, ("env.A", "string")),
    "env not an object": ({"env": ["A=1"]}, ("env", "dictionary")),
    # ports
    "port 0": ({"port": 0}, ("port", "greater than or equal to 1")),
    "port 65536": ({"port": 65536}, ("port", "less than or equal to 65535")),
    "port negative": ({"port": -80}, ("port", "greater than or equal to 1")),
    "port word": ({"port": "eighty"}, ("port", "integer")),
    "port numeric string": ({"port": "80"}, ("port", "integer")),
    "port fraction": ({"port": 80.5}, ("port", "integer")),
    "port boolean": ({"port": True}, ("port", "integer")),
    # health checks
    "health path without slash": (
        {"health": {"type": "http", "path": "healthz"}},
        ("health", "must start with '/'"),
    ),
    "health path with space": (
        {"health": {"type": "http", "path": "/a b"}},
        ("health", "no whitespace"),
    ),
    "health path with tab": (
        {"health": {"type": "http", "path": "/a\tb"}},
        ("health", "no whitespace"),
    ),
    "health path with NUL": (
        {"health": {"type": "http", "path": "/a\x00b"}},
        ("health", "control characters"),
    ),
    "health path too long": (
        {"health": {"type": "http", "path": "/" + "a" * 1024}},
        ("health.http.path", "at most 1024 characters"),
    ),
    "health path on tcp": (
        {"health": {"type": "tcp", "path": "/"}},
        ("health", "only allowed for an http health check"),
    ),
    "health without port": (
        {"port": None, "health": {"type": "tcp"}},
        ("health check", "set port"),
    ),
    "health unknown type": (
        {"health": {"type": "udp"}},
        ("health", "does not match any of the expected tags: 'http', 'tcp'"),
    ),
    "health type missing": ({"health": {}}, ("health", "discriminator 'type'")),
    "health interval too small": (
        {"health": {"type": "tcp", "interval_s": 0.05}},
        ("health.tcp.interval_s", "greater than or equal to 0.1"),
    ),
    "health interval too large": (
        {"health": {"type": "tcp", "interval_s": 301}},
        ("health.tcp.interval_s", "less than or equal to 300"),
    ),
    "health timeout too small": (
        {"health": {"type": "tcp", "timeout_s": 0}},
        ("health.tcp.timeout_s", "greater than or equal to 0.1"),
    ),
    "health timeout too large": (
        {"health": {"type": "tcp", "timeout_s": 61}},
        ("health.tcp.timeout_s", "less than or equal to 60"),
    ),
    "health unknown field": (
        {"health": {"type": "tcp", "retries": 3}},
        ("health.tcp.retries", "Extra inputs are not permitted"),
    ),
    # command
    "command empty": ({"command": []}, ("command", "non-empty list")),
    "command a string": ({"command": "sh -c true"}, ("command", "list")),
    "command with NUL": ({"command": ["sh", "a\x00b"]}, ("command", "NUL")),
    "command unpaired surrogate": ({"command": ["\udc80"]}, ("command", "surrogate")),
    "command too long": ({"command": ["x"] * 257}, ("command", "at most 256")),
    # bounds
    "ready_deadline_s 0": ({"ready_deadline_s": 0}, ("ready_deadline_s", "greater than or equal")),
    "ready_deadline_s 3601": ({"ready_deadline_s": 3601}, ("ready_deadline_s", "less than")),
    "ready_deadline_s boolean": ({"ready_deadline_s": True}, ("ready_deadline_s", "integer")),
    "stop_grace_s -1": ({"stop_grace_s": -1}, ("stop_grace_s", "greater than or equal to 0")),
    "stop_grace_s 301": ({"stop_grace_s": 301}, ("stop_grace_s", "less than or equal to 300")),
    "stop_grace_s string": ({"stop_grace_s": "10"}, ("stop_grace_s", "integer")),
    "memory_mb 3": ({"memory_mb": 3}, ("memory_mb", "greater than or equal to 4")),
    "cpus 0": ({"cpus": 0}, ("cpus", "greater than 0")),
    # unknown fields
    "unknown field": ({"replicas": 2}, ("replicas", "Extra inputs are not permitted")),
    "misspelt field": ({"healthcheck": {"type": "tcp"}}, ("healthcheck", "Extra inputs")),
}


@pytest.mark.parametrize(("overrides", "fragments"), BAD_SPECS.values(), ids=BAD_SPECS.keys())
async def test_deployment_spec_refused(
    vclient: httpx.AsyncClient, name: str, overrides: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    await create(vclient, name)
    response = await deploy(vclient, name, spec(**overrides))
    assert_error(response, 422, "invalid_request", *fragments)
    assert await deployments(vclient, name) == []
    assert (await project(vclient, name))["generation"] == 1


async def test_deployment_spec_must_be_an_object(vclient: httpx.AsyncClient, name: str) -> None:
    await create(vclient, name)
    assert_error(await deploy(vclient, name, ["nginx"]), 422, "invalid_request", "body")
    assert_error(await deploy(vclient, name, "nginx"), 422, "invalid_request", "body")


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ({"to_version": 0}, ("to_version", "greater than or equal to 1")),
        ({"to_version": "v1"}, ("to_version", "integer")),
        ({"to": 1}, ("to", "Extra inputs are not permitted")),
    ],
)
async def test_rollback_body_refused(
    vclient: httpx.AsyncClient, name: str, body: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    await create(vclient, name)
    ok(await deploy(vclient, name), 201)
    ok(await deploy(vclient, name), 201)
    response = await write(vclient, "rollback", name, json=body)
    assert_error(response, 422, "invalid_request", *fragments)
    assert (await project(vclient, name))["target_version"] == 2


@pytest.mark.parametrize(
    ("params", "fragment"),
    [({"after": -1}, "after"), ({"limit": 0}, "limit"), ({"limit": 1001}, "limit")],
)
async def test_events_query_refused(
    vclient: httpx.AsyncClient, name: str, params: dict[str, int], fragment: str
) -> None:
    await create(vclient, name)
    response = await vclient.get(f"/v1/projects/{name}/events", params=params)
    assert_error(response, 422, "invalid_request", fragment)


# Validation: body size


def padded_spec(size: int) -> bytes:
    """A valid deployment spec of exactly `size` bytes of JSON (two env values carry the bulk)."""
    room = size - len(json.dumps({"image": "nginx", "env": {"A": "", "B": ""}}))
    first = min(room, 32 * 1024)
    body = json.dumps({"image": "nginx", "env": {"A": "x" * first, "B": "x" * (room - first)}})
    assert len(body) == size
    return body.encode()


async def post_spec(
    http: httpx.AsyncClient, name: str, body: bytes, *, chunked: bool
) -> httpx.Response:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = await http.post(
        f"/v1/projects/{name}/deployments",
        content=chunks() if chunked else body,
        headers={"Content-Type": "application/json"},
    )
    if chunked:
        assert "Content-Length" not in response.request.headers
        assert response.request.headers["Transfer-Encoding"] == "chunked"
    else:
        assert response.request.headers["Content-Length"] == str(len(body))
    return response


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_at_the_limit_accepted(
    vclient: httpx.AsyncClient, name: str, chunked: bool
) -> None:
    await create(vclient, name)
    response = await post_spec(vclient, name, padded_spec(BODY_LIMIT), chunked=chunked)
    assert ok(response, 201)["deployment"]["version"] == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_over_the_limit_refused(
    vclient: httpx.AsyncClient, name: str, chunked: bool
) -> None:
    await create(vclient, name)
    response = await post_spec(vclient, name, padded_spec(BODY_LIMIT + 1), chunked=chunked)
    body = assert_error(response, 413, "body_too_large", f"larger than {BODY_LIMIT} bytes")
    assert "32 KiB" in body["hint"]
    assert await deployments(vclient, name) == []
    # The connection is still usable afterwards.
    assert (await project(vclient, name))["generation"] == 1


# Validation: If-Match


@pytest.mark.parametrize("value", ["abc", "1.5", "-1", "", "1 2", "\u00b2", "0x1", '"', "1,2"])
async def test_invalid_if_match_refused(vclient: httpx.AsyncClient, name: str, value: str) -> None:
    await create(vclient, name)
    ok(await deploy(vclient, name), 201)
    before = await everything(vclient, name)
    # Sent as bytes: '²' is a valid latin-1 header value, and a Unicode digit to str.isdigit().
    response = await write(vclient, "stop", name, headers={"If-Match": value.encode("latin-1")})
    body = assert_error(response, 400, "bad_request", "If-Match", "generation")
    assert "generation" in body["hint"]
    assert await everything(vclient, name) == before


# Auth

ROUTES: list[Route] = [
    ("GET", "/v1/projects/{name}", None),
    ("GET", "/v1/projects/{name}/status", None),
    ("GET", "/v1/projects/{name}/events", None),
    ("GET", "/v1/projects/{name}/deployments", None),
    ("GET", "/v1/projects/{name}/deployments/1", None),
    ("POST", "/v1/projects/{name}/start", None),
    ("POST", "/v1/projects/{name}/stop", None),
    ("POST", "/v1/projects/{name}/restart", None),
    ("POST", "/v1/projects/{name}/rollback", None),
    ("POST", "/v1/projects/{name}/rollback", {"to_version": 1}),
    ("DELETE", "/v1/projects/{name}", None),
    ("POST", "/v1/projects/{name}/deployments", SPEC),
]


async def call(http: httpx.AsyncClient, route: Route, name: str) -> httpx.Response:
    method, path, body = route
    return await http.request(method, path.format(name=name), json=body)


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        pytest.param(None, "missing API token", id="no header"),
        pytest.param("", "missing API token", id="empty"),
        pytest.param("Bearer", "missing API token", id="no token"),
        pytest.param("Basic YWxpY2U6c2VjcmV0", "missing API token", id="basic"),
        pytest.param("{alice}", "missing API token", id="no scheme"),
        pytest.param("Bearer tth_wrong", "the API token is not valid", id="unknown token"),
        pytest.param("Bearer {alice}x", "the API token is not valid", id="altered token"),
        pytest.param("Bearer x{alice}", "the API token is not valid", id="prefixed token"),
    ],
)
async def test_unauthenticated_requests_refused(
    shared: Shared, open_client: OpenClient, name: str, authorization: str | None, message: str
) -> None:
    await create(shared.client, name)
    ok(await deploy(shared.client, name), 201)
    before = await everything(shared.client, name)
    header = None if authorization is None else authorization.format(alice=shared.alice)
    stranger = open_client(shared.url, header)
    routes = [*ROUTES, ("GET", "/v1/projects", None), ("POST", "/v1/projects", {"name": "new"})]
    for route in routes:
        body = assert_error(await call(stranger, route, name), 401, "unauthorized", message)
        assert "tether token create" in body["hint"], route
    # Authentication comes first: a stranger learns nothing from validation either.
    response = await stranger.post(f"/v1/projects/{name}/deployments", json={"image": "Bad"})
    assert_error(response, 401, "unauthorized", message)
    assert await everything(shared.client, name) == before


async def test_lowercase_bearer_scheme_accepted(shared: Shared, open_client: OpenClient) -> None:
    alice = open_client(shared.url, f"bearer {shared.alice}")
    assert ok(await alice.get("/v1/projects")) == ok(await shared.client.get("/v1/projects"))


async def test_other_owners_project_is_not_found_on_every_route(
    client: httpx.AsyncClient, api_url: str, tokens: Any, open_client: OpenClient
) -> None:
    await create(client)
    ok(await deploy(client), 201)
    ok(await deploy(client, body=spec(image="busybox-httpd:v2")), 201)
    before = await everything(client)
    bob = open_client(api_url, f"Bearer {tokens.bob}")
    for route in ROUTES:
        seen = assert_error(await call(bob, route, SHOP), 404, "not_found", "'shop'")
        # Exactly what bob gets for a project that does not exist at all: no existence oracle.
        absent = assert_error(await call(bob, route, "ghost"), 404, "not_found", "'ghost'")
        assert seen == json.loads(json.dumps(absent).replace("ghost", SHOP)), route
    # A stale If-Match does not make a difference either (no 412 to reveal the generation).
    response = await bob.post(f"/v1/projects/{SHOP}/stop", headers={"If-Match": "99"})
    assert_error(response, 404, "not_found", "'shop'")
    assert ok(await bob.get("/v1/projects")) == []
    assert await everything(client) == before


async def test_project_lists_are_per_owner_and_admin_sees_all(
    client: httpx.AsyncClient, api_url: str, tokens: Any, open_client: OpenClient
) -> None:
    bob = open_client(api_url, f"Bearer {tokens.bob}")
    admin = open_client(api_url, f"Bearer {tokens.admin}")
    await create(client, "alpha")
    await create(client, "beta")
    await create(bob, "gamma")

    def owners(views: list[dict[str, Any]]) -> dict[str, str]:
        return {v["project"]["name"]: v["project"]["owner"] for v in views}

    assert owners(ok(await client.get("/v1/projects"))) == {"alpha": "alice", "beta": "alice"}
    assert owners(ok(await bob.get("/v1/projects"))) == {"gamma": "bob"}
    everyone = ok(await admin.get("/v1/projects"))
    assert owners(everyone) == {"alpha": "alice", "beta": "alice", "gamma": "bob"}
    assert [v["project"]["name"] for v in everyone] == ["alpha", "beta", "gamma"]

    # The admin reads and changes anyone's project, and the history says who did it.
    ok(await deploy(client, "alpha"), 201)
    assert ok(await admin.get("/v1/projects/alpha")) == ok(await client.get("/v1/projects/alpha"))
    assert ok(await admin.get("/v1/projects/gamma/events")) == ok(
        await bob.get("/v1/projects/gamma/events")
    )
    assert (await deployments(admin, "alpha"))[0]["created_by"] == "alice"
    assert ok(await admin.get("/v1/projects/alpha/status"))["project"] == "alpha"
    assert ok(await write(admin, "stop", "alpha"))["changed"] is True
    assert (await project(client, "alpha"))["desired_state"] == "stopped"
    last = (await desired_events(client, "alpha"))[-1]
    assert (last["actor"], last["reason"]) == ("root", "Stop")


# Idempotency


async def test_create_twice_by_the_same_owner_is_not_a_conflict(client: httpx.AsyncClient) -> None:
    first = await create(client)
    again = ok(await client.post("/v1/projects", json={"name": SHOP}), 200)
    assert again["changed"] is False
    assert "already exists" in again["message"]
    assert again["project"] == first["project"]
    assert len(await desired_events(client)) == 1


async def test_create_of_a_name_another_owner_holds_is_a_conflict(
    client: httpx.AsyncClient, api_url: str, tokens: Any, open_client: OpenClient
) -> None:
    await create(client)
    bob = open_client(api_url, f"Bearer {tokens.bob}")
    body = assert_error(await bob.post("/v1/projects", json={"name": SHOP}), 409, "name_taken")
    assert "'shop' is taken" in body["message"]
    assert "another" in body["hint"]
    assert ok(await bob.get("/v1/projects")) == []
    assert (await project(client))["owner"] == "alice"


async def test_start_and_stop_are_idempotent(client: httpx.AsyncClient) -> None:
    await create(client)
    deployed = ok(await deploy(client), 201)
    assert deployed["project"]["desired_state"] == "running"
    generation = deployed["project"]["generation"]

    again = ok(await write(client, "start"))
    assert again["changed"] is False
    assert "already desired running" in again["message"]
    assert again["project"] == deployed["project"]

    stopped = ok(await write(client, "stop"))
    assert stopped["changed"] is True
    assert stopped["project"]["generation"] == generation + 1

    again = ok(await write(client, "stop"))
    assert again["changed"] is False
    assert "already desired stopped" in again["message"]
    assert again["project"] == stopped["project"]


async def test_stop_of_a_project_without_deployment_is_already_satisfied(
    client: httpx.AsyncClient,
) -> None:
    await create(client)
    result = ok(await write(client, "stop"))
    assert result["changed"] is False
    assert "already desired stopped" in result["message"]


@pytest.mark.parametrize("verb", ["start", "restart"])
async def test_start_or_restart_without_deployment_says_to_deploy(
    client: httpx.AsyncClient, verb: str
) -> None:
    await create(client)
    before = await everything(client)
    body = assert_error(await write(client, verb), 400, "no_deployment", "'shop' has no deployment")
    assert "tether deploy shop" in body["hint"]
    assert await everything(client) == before


async def test_rollback_without_deployment_says_to_deploy(client: httpx.AsyncClient) -> None:
    await create(client)
    response = await write(client, "rollback")
    body = assert_error(response, 400, "no_deployment", "no deployment to roll back")
    assert "tether deploy shop" in body["hint"]


async def test_rollback_with_nothing_earlier_refused_with_hint(client: httpx.AsyncClient) -> None:
    await create(client)
    ok(await deploy(client), 201)
    before = await everything(client)
    response = await write(client, "rollback")
    body = assert_error(response, 400, "no_deployment", "v1", "nothing earlier")
    assert "tether deploy shop" in body["hint"]
    assert await everything(client) == before


async def test_rollback_to_unknown_version_is_not_found(client: httpx.AsyncClient) -> None:
    await create(client)
    ok(await deploy(client), 201)
    before = await everything(client)
    response = await write(client, "rollback", json={"to_version": 7})
    body = assert_error(response, 404, "not_found", "no deployment v7")
    assert "tether deployments shop" in body["hint"]
    assert await everything(client) == before


async def test_rollback_to_the_current_version_changes_nothing(client: httpx.AsyncClient) -> None:
    await create(client)
    ok(await deploy(client), 201)
    ok(await deploy(client), 201)
    before = await everything(client)
    result = ok(await write(client, "rollback", json={"to_version": 2}))
    assert result["changed"] is False
    assert "already targeting v2" in result["message"]
    assert await everything(client) == before


async def test_no_write_ever_answers_409_for_already(client: httpx.AsyncClient) -> None:
    await create(client)
    ok(await deploy(client), 201)
    ok(await deploy(client), 201)
    for verb, body in [
        ("start", None),
        ("start", None),
        ("restart", None),
        ("restart", None),
        ("stop", None),
        ("stop", None),
        ("rollback", {"to_version": 1}),
        ("rollback", {"to_version": 1}),
        ("start", None),
        ("start", None),
    ]:
        response = await write(client, verb, json=body)
        assert response.status_code == 200, (verb, response.text)
    for _ in range(2):
        assert (await client.post("/v1/projects", json={"name": SHOP})).status_code == 200
    for _ in range(2):
        assert (await client.delete(f"/v1/projects/{SHOP}")).status_code == 202


# Generation, events, NOTIFY and If-Match


async def test_generation_event_and_notify_once_per_real_change(
    client: httpx.AsyncClient, store: Store
) -> None:
    notified: asyncio.Queue[str] = asyncio.Queue()
    async with store.listen("tether_desired", notified.put_nowait):
        created = await create(client)
        assert created["project"]["generation"] == 1
        # (what, request, whether it changes the desired state)
        steps: list[tuple[str, Callable[[], Any], bool]] = [
            ("create", lambda: client.post("/v1/projects", json={"name": SHOP}), False),
            ("deploy v1", lambda: deploy(client), True),
            ("start", lambda: write(client, "start"), False),
            ("stop", lambda: write(client, "stop"), True),
            ("stop", lambda: write(client, "stop"), False),
            ("start", lambda: write(client, "start"), True),
            ("restart", lambda: write(client, "restart"), True),
            ("restart", lambda: write(client, "restart"), True),
            ("deploy v2", lambda: deploy(client, body=spec(image="busybox-httpd:v2")), True),
            ("rollback", lambda: write(client, "rollback"), True),
            ("rollback v1", lambda: write(client, "rollback", json={"to_version": 1}), False),
            ("rollback v2", lambda: write(client, "rollback", json={"to_version": 2}), True),
            ("stop", lambda: write(client, "stop"), True),
            ("deploy v3, no start", lambda: deploy(client, start="false"), True),
            ("destroy", lambda: client.delete(f"/v1/projects/{SHOP}"), True),
            ("destroy", lambda: client.delete(f"/v1/projects/{SHOP}"), False),
        ]
        generation, changes = 1, [1]
        for what, send, changes_something in steps:
            response = await send()
            assert response.status_code < 300, (what, response.text)
            result = response.json()
            assert result["changed"] is changes_something, (what, result)
            generation += changes_something
            assert result["project"]["generation"] == generation, (what, result)
            if changes_something:
                changes.append(generation)
            assert await project(client) == result["project"], what

        final = await project(client)
        assert (final["desired_state"], final["target_version"]) == ("stopped", 3)
        assert final["restart_token"] == 2
        assert final["deletion_requested"] is True
        # One desired event per acknowledged change, carrying the generation it made.
        events = await desired_events(client)
        assert [e["generation"] for e in events] == changes
        assert {e["actor"] for e in events} == {"alice"}
        # One NOTIFY per acknowledged change and none for the no-ops. Notifications arrive in
        # commit order, so once a last change on another project has arrived, all have.
        await create(client, "marker")
        received = [await asyncio.wait_for(notified.get(), 10) for _ in range(len(changes) + 1)]
        assert received == [SHOP] * len(changes) + ["marker"]
        assert notified.empty()


async def test_etag_is_the_generation(client: httpx.AsyncClient) -> None:
    await create(client)
    assert (await client.get(f"/v1/projects/{SHOP}")).headers["ETag"] == '"1"'
    ok(await deploy(client), 201)
    response = await client.get(f"/v1/projects/{SHOP}")
    assert response.headers["ETag"] == '"2"'
    assert response.json()["project"]["generation"] == 2


@pytest.mark.parametrize("form", ["{g}", '"{g}"', 'W/"{g}"'])
async def test_if_match_at_the_current_generation_applies(
    client: httpx.AsyncClient, form: str
) -> None:
    await create(client)
    ok(await deploy(client), 201)
    etag = (await client.get(f"/v1/projects/{SHOP}")).headers["ETag"]
    generation = int(etag.strip('"'))
    response = await write(client, "stop", headers={"If-Match": form.format(g=generation)})
    result = ok(response)
    assert result["changed"] is True
    assert result["project"]["generation"] == generation + 1
    assert (await project(client))["desired_state"] == "stopped"


async def test_if_match_applies_to_every_write(client: httpx.AsyncClient) -> None:
    await create(client)
    steps = [
        ("POST", f"/v1/projects/{SHOP}/deployments", SPEC),
        ("POST", f"/v1/projects/{SHOP}/deployments", spec(image="busybox-httpd:v2")),
        ("POST", f"/v1/projects/{SHOP}/stop", None),
        ("POST", f"/v1/projects/{SHOP}/start", None),
        ("POST", f"/v1/projects/{SHOP}/restart", None),
        ("POST", f"/v1/projects/{SHOP}/rollback", None),
        ("DELETE", f"/v1/projects/{SHOP}", None),
    ]
    for generation, (method, path, body) in enumerate(steps, start=1):
        response = await client.request(
            method, path, json=body, headers={"If-Match": f'"{generation}"'}
        )
        assert response.status_code < 300, (path, response.text)
        assert response.json()["project"]["generation"] == generation + 1


async def test_if_match_mismatch_changes_nothing(client: httpx.AsyncClient) -> None:
    await create(client)
    ok(await deploy(client), 201)
    ok(await deploy(client, body=spec(image="busybox-httpd:v2")), 201)
    ok(await write(client, "stop"))
    before = await everything(client)
    assert before["view"]["project"]["generation"] == 4
    for stale, generation in [("3", 3), ('"5"', 5)]:
        for method, path, body in [
            ("POST", f"/v1/projects/{SHOP}/start", None),
            ("POST", f"/v1/projects/{SHOP}/stop", None),  # would be a no-op: refused all the same
            ("POST", f"/v1/projects/{SHOP}/restart", None),
            ("POST", f"/v1/projects/{SHOP}/rollback", None),
            ("POST", f"/v1/projects/{SHOP}/rollback", {"to_version": 2}),
            ("POST", f"/v1/projects/{SHOP}/deployments", spec(image="busybox-httpd:v3")),
            ("DELETE", f"/v1/projects/{SHOP}", None),
        ]:
            response = await client.request(method, path, json=body, headers={"If-Match": stale})
            error = assert_error(
                response, 412, "generation_mismatch", f"at generation 4, not {generation}"
            )
            assert "nothing was changed" in error["message"]
            assert "read the project again" in error["hint"]
    assert await everything(client) == before


# Destroy


async def test_writes_after_destroy_are_refused(client: httpx.AsyncClient) -> None:
    await create(client)
    ok(await deploy(client), 201)
    ok(await deploy(client, body=spec(image="busybox-httpd:v2")), 201)
    destroyed = ok(await client.delete(f"/v1/projects/{SHOP}"), 202)
    assert destroyed["changed"] is True
    assert destroyed["project"]["deletion_requested"] is True
    assert "deletion requested" in destroyed["message"]
    before = await everything(client)
    assert before["view"]["project"]["deletion_requested"] is True
    for response in [
        await write(client, "start"),
        await write(client, "stop"),
        await write(client, "restart"),
        await write(client, "rollback"),
        await write(client, "rollback", json={"to_version": 1}),
        await deploy(client, body=spec(image="busybox-httpd:v3")),
    ]:
        body = assert_error(response, 400, "deletion_requested", "'shop' is being destroyed")
        assert body["hint"]
    again = ok(await client.delete(f"/v1/projects/{SHOP}"), 202)
    assert again["changed"] is False
    assert "already" in again["message"]
    assert await everything(client) == before


async def test_create_of_a_project_being_destroyed_is_refused(client: httpx.AsyncClient) -> None:
    await create(client)
    ok(await client.delete(f"/v1/projects/{SHOP}"), 202)
    response = await client.post("/v1/projects", json={"name": SHOP})
    assert_error(response, 400, "deletion_requested", "'shop' is being destroyed")


# Concurrency


async def test_concurrent_writers(api_url: str, tokens: Any, client: httpx.AsyncClient) -> None:
    """20 clients, 10 random start/stop/deploy writes on one project: no 5xx and no 409; the
    final desired state is the last acknowledged change's; one generation step and one event row
    per acknowledged change."""
    await create(client)
    ok(await deploy(client), 201)
    initial = await project(client)
    events_before = len(await desired_events(client))
    acknowledged: list[tuple[str, dict[str, Any]]] = []

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(
            base_url=api_url, headers={"Authorization": f"Bearer {tokens.alice}"}, timeout=30
        ) as http:
            for _ in range(10):
                verb = rng.choice(["start", "stop", "start", "stop", "deploy"])
                if verb == "deploy":
                    start = rng.choice(["true", "false"])
                    response = await deploy(http, body=spec(image=f"app:c{seed}"), start=start)
                else:
                    response = await write(http, verb)
                assert response.status_code in (200, 201), (verb, response.text)
                acknowledged.append((verb, response.json()))

    await asyncio.gather(*(writer(seed) for seed in range(20)))

    assert len(acknowledged) == 200
    for verb, result in acknowledged:
        wanted = {"start": "running", "stop": "stopped"}.get(verb)
        if wanted:  # a no-op or not, the answer says the asked state is what is desired now
            assert result["project"]["desired_state"] == wanted, result
            assert result["changed"] or f"already desired {wanted}" in result["message"], result
        else:
            assert result["changed"] is True, result
    assert {verb for verb, _ in acknowledged} == {"start", "stop", "deploy"}
    changes = [result["project"] for _, result in acknowledged if result["changed"]]

    # Every acknowledged change made its own generation, one above the one before: no gaps, no
    # repeats, and no-ops made none.
    generations = sorted(p["generation"] for p in changes)
    first = initial["generation"]
    assert generations == list(range(first + 1, first + 1 + len(changes)))

    # The final desired state is the one of the last acknowledged change, and any no-op
    # acknowledged at that final generation agrees with it.
    final = await project(client)
    assert final == max(changes, key=lambda p: p["generation"])
    assert final["generation"] == first + len(changes)
    for _, result in acknowledged:
        if result["project"]["generation"] == final["generation"]:
            assert result["project"] == final

    # One desired event per acknowledged change, with its generation.
    events = (await desired_events(client))[events_before:]
    assert sorted(e["generation"] for e in events) == generations
    deploys = sum(1 for verb, _ in acknowledged if verb == "deploy")
    assert [d["version"] for d in await deployments(client)] == list(range(1, deploys + 2))


# Errors outside the API's own routes keep the same shape


async def test_unknown_route_and_method_answer_the_error_shape(vclient: httpx.AsyncClient) -> None:
    body = assert_error(await vclient.get("/v1/nothing-here"), 404, "not_found", hint=False)
    assert "/v1/nothing-here" in body["message"]
    response = await vclient.put("/v1/projects")
    assert_error(response, 405, "method_not_allowed", "PUT /v1/projects", hint=False)
    assert response.headers["Allow"]
