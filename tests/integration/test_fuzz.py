"""The API fuzzed from its own OpenAPI schema (schemathesis) through `tether api` as a process on
real Postgres, with a valid token: no answer is a server error (5xx), and every answer conforms to
the schema it serves at /openapi.json (status code declared, content type, body, headers).

Each operation gets a bounded number of valid requests (positive) and of requests that break the
schema (negative: they must be refused with a 4xx). The streams (`watch`, `logs`) are left out:
they answer for as long as the client listens; their refusals are tested in test_watch.py.
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
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
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
STREAMS = ("/watch", "/logs")
SPEC = create_app(None).openapi()  # type: ignore[arg-type]  # the schema needs no store
OPERATIONS = [
    f"{method.upper()} {path}"
    for path, methods in SPEC["paths"].items()
    for method in methods
    if not path.endswith(STREAMS)
]
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
]


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
        case.call_and_validate(base_url=api_process, headers=auth, checks=CHECKS)

    fuzz()
