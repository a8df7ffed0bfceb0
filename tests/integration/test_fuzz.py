"""The API fuzzed from its own OpenAPI schema (schemathesis) through `tether api` as a process on
real Postgres, with a valid token: no answer is a server error (5xx), and every answer conforms to
the schema it serves at /openapi.json (status code declared, content type, body, headers).

Each operation gets a bounded number of valid requests (positive) and of requests that break the
schema (negative: each must be refused with a 4xx, schemathesis' `negative_data_rejection`). The
streams are left out of the positive cases (they answer for as long as the client listens); the
logs stream's negative ones are in (refused before any stream starts: `since=0.5` is among them).
Every method a path does not declare is answered 405 with an `Allow` that lists exactly the
methods it does (schemathesis' `allow_header_conformance` for OPTIONS).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support import free_port, wait_until

from tether.api.app import create_app
from tether.api.store import Store

EXAMPLES = 25
# No server error, and every answer as the schema declares it. Not checked: whether a valid
# request is accepted (the API refuses many on the state of the project: 400 no deployment, 412
# stale generation) and whether an invalid one is refused (unknown query parameters are ignored,
# as by most HTTP APIs; invalid values of known ones are refused, and that is tested elsewhere).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Negative requests are refused: with the statuses a refusal may have here (schemathesis' default
# list, and 400 of a header's own check, If-Match).
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]
STREAMS = ("/watch", "/logs")
SPEC = create_app(None).openapi()  # type: ignore[arg-type]  # the schema needs no store
OPERATIONS = [
    f"{method.upper()} {path}"
    for path, methods in SPEC["paths"].items()
    for method in methods
    if not path.endswith(STREAMS)
]
# Refused before the stream starts: a negative request never opens one.
NEGATIVE_ONLY = ["GET /v1/projects/{name}/logs"]
# Negative requests need something to break: a parameter or a body.
WITH_INPUT = {
    f"{method.upper()} {path}"
    for path, methods in SPEC["paths"].items()
    for method, operation in methods.items()
    if operation.get("parameters") or operation.get("requestBody")
}
CASES = [
    pytest.param(label, mode, id=f"{label} {mode.value}")
    for label in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or label in WITH_INPUT
] + [
    pytest.param(label, GenerationMode.NEGATIVE, id=f"{label} negative") for label in NEGATIVE_ONLY
]
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
PATH_VALUES = {"name": "shop", "version": 1, "volume": "data", "hook": 1}


@pytest.fixture(scope="module")
async def fuzz_database(postgres_url: str, template_url: str) -> AsyncIterator[tuple[str, str]]:
    """A migrated database of this module's own, and an owner's token for it."""
    name = f"f_{uuid.uuid4().hex[:12]}"
    template = urlsplit(template_url).path.lstrip("/")
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        dsn = urlsplit(postgres_url)._replace(path=f"/{name}").geturl()
        store = await Store.connect(dsn)
        try:
            token = await store.create_token("alice")
        finally:
            await store.close()
        yield dsn, token
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def api_process(fuzz_database: tuple[str, str], tmp_path_factory: Any) -> Iterator[str]:
    """`tether api` on a loopback port of its own."""
    dsn, _ = fuzz_database
    port = free_port()
    env = {
        **os.environ,
        "TETHER_DATABASE_URL": dsn,
        "TETHER_API_PORT": str(port),
        "TETHER_LOG_LEVEL": "warning",
        "TETHER_LOG_FORMAT": "json",
        # Fuzzed requests that fail authentication must not lock the fuzzer's address out.
        "TETHER_AUTH_FAILURES": "100000",
    }
    log = tmp_path_factory.mktemp("fuzz") / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "tether"), "api"], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(ready, "tether api ready", within_s=20)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()}") from None
        yield url
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def served_schema(api_process: str) -> Any:
    """The schema the running API serves (the one fuzzed)."""
    return schemathesis.openapi.from_url(f"{api_process}/openapi.json")


def test_every_operation_is_fuzzed_or_a_stream(served_schema: Any) -> None:
    served = {f"{r.ok().method.upper()} {r.ok().path}" for r in served_schema.get_all_operations()}
    assert {op for op in served if not op.endswith(STREAMS)} == set(OPERATIONS)
    assert len(served - set(OPERATIONS)) == 3


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_the_api_keeps_to_its_schema(
    served_schema: Any,
    api_process: str,
    fuzz_database: tuple[str, str],
    label: str,
    mode: GenerationMode,
) -> None:
    operation = served_schema.find_operation_by_label(label)
    assert operation is not None, label
    auth = {"Authorization": f"Bearer {fuzz_database[1]}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        if mode is GenerationMode.POSITIVE:
            case.call_and_validate(base_url=api_process, headers=auth, checks=CHECKS)
            return
        # A case whose headers break the schema may have had its token left out or mangled:
        # sent as generated (else the valid token would make it a valid request), it must be
        # refused as any other (401 among the refusals).
        header = case.meta.components.get(ParameterLocation.HEADER)
        negated = header is not None and header.mode.is_negative
        case.call_and_validate(
            base_url=api_process, headers=None if negated else auth, checks=NEGATIVE_CHECKS
        )

    fuzz()


@pytest.mark.parametrize("path", list(SPEC["paths"]))
def test_a_method_a_path_does_not_declare_is_answered_405_with_the_methods_it_does(
    served_schema: Any, api_process: str, fuzz_database: tuple[str, str], path: str
) -> None:
    declared = {method.upper() for method in SPEC["paths"][path]}
    auth = {"Authorization": f"Bearer {fuzz_database[1]}"}
    url = api_process + path.format(**PATH_VALUES)
    for method in sorted(set(METHODS) - declared):
        answer = httpx.request(method, url, headers=auth, timeout=10)
        assert answer.status_code == 405, (method, path, answer.text)
        allowed = {m.strip() for m in answer.headers["allow"].split(",")}
        assert allowed == declared, (method, path)
        if method != "HEAD":
            assert answer.json()["error"] == "method_not_allowed"
    # The same through schemathesis' own check of an OPTIONS answer, for each operation.
    for declared_method in declared:
        operation = served_schema.find_operation_by_label(f"{declared_method} {path}")
        case = operation.Case(
            method="OPTIONS",
            path_parameters={k: v for k, v in PATH_VALUES.items() if "{" + k + "}" in path},
        )
        case.call_and_validate(
            base_url=api_process, headers=auth, checks=[allow_header_conformance]
        )


def test_logs_since_takes_an_rfc3339_time_only(
    api_process: str, fuzz_database: tuple[str, str]
) -> None:
    """The schema says `format: date-time`; a number of seconds (which pydantic would read as a
    time since 1970) is refused, naming the form."""
    auth = {"Authorization": f"Bearer {fuzz_database[1]}"}
    url = f"{api_process}/v1/projects/shop/logs"
    for since in ("0.5", "1700000000", "yesterday", "2026-12-01T12:00:00"):
        answer = httpx.get(url, params={"since": since}, headers=auth, timeout=10)
        assert answer.status_code == 422, (since, answer.text)
        assert "RFC 3339" in answer.json()["message"]
    for since in ("2026-12-01T12:00:00Z", "2026-12-01T12:00:00.5+01:00"):
        answer = httpx.get(url, params={"since": since}, headers=auth, timeout=10)
        assert answer.status_code == 404, (since, answer.text)  # valid: no such project
