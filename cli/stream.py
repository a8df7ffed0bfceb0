"""Server-sent events from the API: the streams behind `watch`, `--wait`, `events --follow` and
`logs`, read with httpx as they come (never by polling) and parsed by httpx-sse.

A stream that breaks after it was open is opened again (`reconnecting`, on tether's one reconnect
primitive); one that cannot be opened at all is a failure, reported like any other request's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import httpx
from httpx_sse import ServerSentEvent, SSEError, aconnect_sse

from tether.api.reconnect import Backoff, GaveUp, Reconnect
from tether.cli.client import ApiError, NoAnswer, api_failure, headers_for, transport_problem
from tether.cli.config import ClientConfig
from tether.cli.errors import CliError

T = TypeVar("T")
# The API sends a keep-alive comment every 15 s: a stream silent for longer is dead.
READ_TIMEOUT_S = 45.0
RETRY = Backoff(first_s=0.25, max_s=5.0)
GIVE_UP_S = 60.0
TRANSIENT_STATUSES = frozenset({502, 503, 504})

__all__ = [
    "EventStreams",
    "ServerSentEvent",
    "StreamBroken",
    "StreamEnded",
    "following",
    "reconnecting",
]


class StreamBroken(CliError):
    """The stream could not be opened (`opened` False) or broke off (True)."""

    def __init__(self, message: str, *, opened: bool) -> None:
        super().__init__(message)
        self.opened = opened


class StreamEnded(CliError):
    """The server ended a stream the command was still reading: it is opened again."""


def _kind(exc: httpx.TransportError) -> NoAnswer:
    if isinstance(exc, httpx.ConnectError):
        return NoAnswer.CONNECT
    if isinstance(exc, httpx.TimeoutException):
        return NoAnswer.TIMEOUT
    return NoAnswer.BROKEN


class EventStreams:
    """An async client of the API for its event streams (and the few reads that go with them)."""

    def __init__(self, config: ClientConfig, *, read_timeout_s: float = READ_TIMEOUT_S) -> None:
        self.url = config.url
        self.timeout_s = config.timeout_s
        self._http = httpx.AsyncClient(
            base_url=config.url,
            headers=headers_for(config),
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
            raise transport_problem(self.url, self.timeout_s, exc, _kind(exc)) from exc
        if not response.is_success:
            raise api_failure(self.url, response.status_code, response.text)
        return response.json()

    async def events(
        self, path: str, params: dict[str, Any] | None = None
    ) -> AsyncIterator[ServerSentEvent]:
        """The events of one stream until the server ends it. Raises `ApiError` when the API
        refuses it, `StreamBroken` when it cannot be opened or breaks off."""
        opened = False
        try:
            async with aconnect_sse(self._http, "GET", "/v1" + path, params=params) as source:
                response = source.response
                if not response.is_success:
                    await response.aread()
                    raise api_failure(self.url, response.status_code, response.text)
                opened = True
                async for event in source.aiter_sse():
                    yield event
        except SSEError as exc:
            raise CliError(
                f"the server at {self.url} did not answer with an event stream: is TETHER_URL "
                "the tether API?"
            ) from exc
        except httpx.TransportError as exc:
            problem = transport_problem(self.url, self.timeout_s, exc, _kind(exc))
            if opened and isinstance(exc, httpx.ReadTimeout):
                problem = CliError(
                    f"the stream from the tether API at {self.url} was silent for over "
                    f"{READ_TIMEOUT_S:g} s"
                )
            raise StreamBroken(problem.message, opened=opened) from exc


def reconnecting(what: str, on_failure: Callable[[CliError], None] | None = None) -> Reconnect:
    """How a broken stream is tried again: soon, then less often, and not forever. A stream
    that never opened, or an API refusal other than unavailability, ends the command at once.
    Call `connected()` on it whenever the stream delivers."""

    def transient(exc: BaseException) -> bool:
        if isinstance(exc, ApiError):
            return exc.status in TRANSIENT_STATUSES and reconnect.connected_once
        if isinstance(exc, StreamBroken):
            return exc.opened or reconnect.connected_once
        return isinstance(exc, StreamEnded)

    def report(failure: BaseException | None, _delay_s: float) -> None:
        if on_failure is not None and isinstance(failure, CliError):
            on_failure(failure)

    reconnect = Reconnect(
        what, retry_on=transient, backoff=RETRY, give_up_after_s=GIVE_UP_S, on_failure=report
    )
    return reconnect


async def following(reconnect: Reconnect, once: Callable[[], Awaitable[T]]) -> T:
    """`once()` (reading a stream) until it returns, opened again after each break."""
    try:
        return await reconnect.until_done(once)
    except GaveUp as exc:
        message = exc.last.message if isinstance(exc.last, CliError) else str(exc.last)
        raise CliError(
            f"lost {reconnect.what} and could not get it back for {GIVE_UP_S:g} s: {message}"
        ) from exc.last
