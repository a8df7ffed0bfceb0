"""The CLI's HTTP client for the tether API: base URL, bearer token, and one-line failures.

Every failure becomes a `CliError` whose message says what went wrong and what to do: the API's own
`message` and `hint`, or, when no answer came, the URL that did not answer and how to start it.

The one-request commands (`status`, `start`, ...) send their request with `tether.cli.wire`: httpx
costs ~100 ms to import, most of what such a command may take (docs/benchmarks.md). The streams
(`tether.cli.stream`) use httpx.
"""

from __future__ import annotations

import json
import socket
from enum import StrEnum
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit

from tether.cli import wire
from tether.cli.config import ClientConfig
from tether.cli.errors import CliError

START_SERVER = (
    "start it with `tether up` (or `tether api`), or point TETHER_URL or `tether login --url` "
    "at a running server"
)
USER_AGENT = "tether-cli"


class ApiError(CliError):
    """The API answered with an error: its HTTP status and stable `error` code are kept."""

    def __init__(self, message: str, *, status: int, error: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


def _join(message: str, hint: str | None) -> str:
    return f"{message.rstrip('.')}; {hint}" if hint else message


def headers_for(config: ClientConfig) -> dict[str, str]:
    """The headers of every request: the token (a `CliError` saying how to get one if missing)."""
    if not config.token:
        raise CliError(
            f"no API token for {config.url}: run `tether login --url {config.url} --token TOKEN` "
            "or set TETHER_TOKEN (an admin creates tokens with `tether token create --owner "
            "NAME`)"
        )
    return {"Authorization": f"Bearer {config.token}", "User-Agent": USER_AGENT}


class ApiClient:
    def __init__(self, config: ClientConfig) -> None:
        self.url = config.url
        self.timeout_s = config.timeout_s
        self._headers = headers_for(config)
        self._parts = urlsplit(config.url)
        self._prefix = self._parts.path.rstrip("/") + "/v1"

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None  # each request has a connection of its own

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._request("GET", path, params=params)

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        if_match: int | None = None,
    ) -> Any:
        return self._request("POST", path, body=body, params=params, if_match=if_match)

    def delete(
        self, path: str, *, if_match: int | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        return self._request("DELETE", path, if_match=if_match, params=params)

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        if_match: int | None = None,
    ) -> Any:
        headers = dict(self._headers)
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        target = self._prefix + path + (f"?{urlencode(params)}" if params else "")
        try:
            answer = wire.request(self._parts, method, target, headers, content, self.timeout_s)
        except OSError as exc:
            raise transport_problem(self.url, self.timeout_s, exc, _kind(exc)) from exc
        status, text = answer.status, answer.body.decode("utf-8", "replace")
        if 200 <= status < 300:
            try:
                return json.loads(text)
            except ValueError as exc:
                raise CliError(
                    f"the server at {self.url} did not answer with JSON: is TETHER_URL the "
                    "tether API?"
                ) from exc
        raise api_failure(self.url, status, text)


class NoAnswer(StrEnum):
    CONNECT = "connect"  # the connection was refused, or the host not found
    TIMEOUT = "timeout"
    BROKEN = "broken"  # anything else on the way


def transport_problem(url: str, timeout_s: float, exc: BaseException, kind: NoAnswer) -> CliError:
    """What to say when no answer came from the API at `url`."""
    if kind is NoAnswer.CONNECT:
        return CliError(
            f"cannot connect to the tether API at {url} ({_reason(exc)}); {START_SERVER}"
        )
    if kind is NoAnswer.TIMEOUT:
        return CliError(
            f"the tether API at {url} did not answer within {timeout_s:g} s; check that the "
            "server is healthy (raise TETHER_TIMEOUT for a slow link) and retry"
        )
    return CliError(
        f"the connection to the tether API at {url} failed ({_reason(exc)}); retry, and check "
        "the server's log if it persists"
    )


def _kind(exc: BaseException) -> NoAnswer:
    if isinstance(exc, TimeoutError):
        return NoAnswer.TIMEOUT
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return NoAnswer.CONNECT
    return NoAnswer.BROKEN


def api_failure(url: str, status: int, content: str) -> ApiError:
    """The API's error answer (its body already read) as one line."""
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        body = {"error": f"http_{status}", "message": ""}
    error: str = str(body.get("error"))
    message: str = body["message"]
    hint = body.get("hint") if isinstance(body.get("hint"), str) else None
    if status == 401:
        text = (
            f"the tether API at {url} refused the token ({message or 'unauthorized'}); "
            f"run `tether login --url {url} --token TOKEN` with a valid token (an admin "
            "creates one with `tether token create --owner NAME`)"
        )
    elif status == 503 and error in ("database_unavailable", "http_503"):
        text = _join(
            f"the tether API at {url} answered 503: "
            + (message or "its database is unreachable; nothing was changed"),
            hint or "retry shortly; if it persists, check that Postgres is running",
        )
    elif message:
        text = _join(message, hint)
    else:
        snippet = " ".join(content.split())[:200]
        text = f"the server at {url} answered HTTP {status}" + (f": {snippet}" if snippet else "")
    return ApiError(text, status=status, error=error)


def _innermost(exc: BaseException) -> BaseException:
    cause = exc
    while (inner := cause.__cause__ or cause.__context__) is not None:
        cause = inner
    return cause


def _reason(exc: BaseException) -> str:
    """The innermost cause, e.g. 'Connection refused', without the errno noise."""
    cause = _innermost(exc)
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(cause) or str(exc) or type(exc).__name__
