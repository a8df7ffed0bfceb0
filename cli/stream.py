"""Server-sent events from the API: the streams behind `watch`, `--wait`, `events --follow` and
`logs`, read with httpx as they come (never by polling).

A stream that breaks after it was open is the caller's to reconnect (`Reconnector`); one that cannot
be opened at all is a failure, reported like any other request's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from tether.cli.client import ApiError, api_failure, transport_problem
from tether.cli.config import ClientConfig
from tether.cli.errors import CliError

# The API sends a keep-alive comment every 15 s: a stream silent for longer is dead.
READ_TIMEOUT_S = 45.0
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 5.0
GIVE_UP_S = 60.0
TRANSIENT_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class ServerEvent:
    event: str
    data: str


class StreamBroken(CliError):
    """The stream could not be opened (`opened` False) or broke off (True)."""

    def __init__(self, message: str, *, opened: bool) -> None:
        super().__init__(message)
        self.opened = opened


class EventStreams:
    """An async client of the API for its event streams (and the few reads that go with them)."""

    def __init__(self, config: ClientConfig, *, read_timeout_s: float = READ_TIMEOUT_S) -> None:
        if not config.token:
            raise CliError(
                f"no API token for {config.url}: run `tether login --url {config.url} --token "
                "TOKEN` or set TETHER_TOKEN (an admin creates tokens with `tether token create "
                "--owner NAME`)"
            )
        self.url = config.url
        self.timeout_s = config.timeout_s
        self._http = httpx.AsyncClient(
            base_url=config.url,
            headers={"Authorization": f"Bearer {config.token}", "User-Agent": "tether-cli"},
            timeout=httpx.Timeout(config.timeout_s, read=max(read_timeout_s, config.timeout_s)),
        )

    async def __aenter__(self) -> EventStreams:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            response = await self._http.get("/v1" + path, params=params)
        except httpx.TransportError as exc:
            raise transport_problem(self.url, self.timeout_s, exc) from exc
        if not response.is_success:
            raise api_failure(self.url, response)
        return response.json()

    async def events(
        self, path: str, params: dict[str, Any] | None = None
    ) -> AsyncIterator[ServerEvent]:
        """The events of one stream until the server ends it. Raises `ApiError` when the API
        refuses it, `StreamBroken` when it cannot be opened or breaks off."""
        opened = False
        data: list[str]
        try:
            async with self._http.stream(
                "GET", "/v1" + path, params=params, headers={"Accept": "text/event-stream"}
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise api_failure(self.url, response)
                opened = True
                event, data = "message", []
                async for line in response.aiter_lines():
                    if not line:
                        if data:
                            yield ServerEvent(event, "\n".join(data))
                        event, data = "message", []
                    elif line.startswith(":"):
                        continue  # a comment: the server's keep-alive
                    else:
                        field, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if field == "event":
                            event = value
                        elif field == "data":
                            data.append(value)
        except httpx.TransportError as exc:
            problem = transport_problem(self.url, self.timeout_s, exc)
            if opened and isinstance(exc, httpx.ReadTimeout):
                problem = CliError(
                    f"the stream from the tether API at {self.url} was silent for over "
                    f"{READ_TIMEOUT_S:g} s"
                )
            raise StreamBroken(problem.message, opened=opened) from exc


class Reconnector:
    """When to try a broken stream again: soon, then less often, and not forever."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._delay = RETRY_FIRST_S
        self._failing_since: float | None = None
        self.opened_once = False

    def opened(self) -> None:
        self.opened_once = True
        self._delay = RETRY_FIRST_S
        self._failing_since = None

    async def after(self, problem: CliError) -> None:
        """Wait before the next try, or raise when this failure ends the command: a stream that
        never opened, an API refusal other than unavailability, or failures for `GIVE_UP_S`."""
        if isinstance(problem, ApiError):
            if problem.status not in TRANSIENT_STATUSES or not self.opened_once:
                raise problem
        elif isinstance(problem, StreamBroken) and not problem.opened and not self.opened_once:
            raise problem
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since > GIVE_UP_S:
            raise CliError(
                f"lost {self._what} and could not get it back for {GIVE_UP_S:g} s: "
                f"{problem.message}"
            )
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, RETRY_MAX_S)
