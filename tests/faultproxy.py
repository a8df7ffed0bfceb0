"""A fault-injecting Docker Engine proxy for tests: a real HTTP/1.1 proxy on a unix socket.

It forwards every request to the real engine as it came (keep-alive connections, chunked streams
such as `/events` and followed logs, hijacked connections such as attach) and, when told, does
something else with some calls: per endpoint (`START` is "POST /containers/{id}/start"), for one
project or any, for the next N matching calls or until cleared:

- `Respond(status, body)`: answer without forwarding (`already_running()` is the 409 lie at the
  root of the seed's story; `NOT_MODIFIED` is a 304; `server_error(503)` a 5xx);
- `Delay(seconds)`: hold the request, then forward it (the engine still carries it out, late);
- `Drop()`: close the connection without an answer; `Drop(after_forward=True)` lets the engine
  carry the request out first, then drops the answer;
- `Stale()`: answer an inspect with the body recorded before the rule was injected;
- `Cut(after_s)`: forward an events request, then end the stream.

`cut_event_streams()` ends the event streams open now. Every call is recorded (`calls`), with the
project it concerns when the proxy can tell (it learns container ids from the traffic) and what it
did with it, so that tests count attempts instead of guessing them.

Nothing of aiodocker or aiohttp is faked: the operator talks to `proxy.url` exactly as it talks to
dockerd.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tether.operator.labels import LABEL_PROJECT

# The Engine API endpoints tether uses, as `FaultProxy.inject` takes them.
LIST = "GET /containers/json"
INSPECT = "GET /containers/{id}/json"
CREATE = "POST /containers/create"
START = "POST /containers/{id}/start"
STOP = "POST /containers/{id}/stop"
REMOVE = "DELETE /containers/{id}"
EVENTS = "GET /events"
LOGS = "GET /containers/{id}/logs"
VOLUME_LIST = "GET /volumes"
VOLUME_CREATE = "POST /volumes/create"
VOLUME_REMOVE = "DELETE /volumes/{id}"  # the volume's name as its id
# Each kind of Docker call a pass makes, by the name the driver gives it. A pass lists nothing
# while the driver's container index is trusted (operator/engine/docker/index.py): the list is
# the resync's, once a period for every project.
CALL_KINDS = {
    "inspect": INSPECT,
    "create": CREATE,
    "start": START,
    "stop": STOP,
    "remove": REMOVE,
}
KNOWN = (
    LIST,
    INSPECT,
    CREATE,
    START,
    STOP,
    REMOVE,
    EVENTS,
    LOGS,
    VOLUME_LIST,
    VOLUME_CREATE,
    VOLUME_REMOVE,
)
STREAMING = (EVENTS, LOGS)

_API_VERSION = re.compile(r"^/v\d+(?:\.\d+)?(?=/)")
_CHUNK = 64 * 1024


# Faults


@dataclass(frozen=True)
class Respond:
    """Answer `status` with `body` (JSON) instead of forwarding."""

    status: int
    body: dict[str, Any] | None = None

    def __str__(self) -> str:
        return f"respond {self.status}"


def already_running() -> Respond:
    """The lie of the seed's story: a start refused as 'already running', not forwarded."""
    return Respond(409, {"message": "container already running"})


def server_error(status: int = 500) -> Respond:
    return Respond(status, {"message": f"injected fault: HTTP {status}"})


NOT_MODIFIED = Respond(304)


@dataclass(frozen=True)
class Delay:
    """Hold the request this long, then forward it."""

    seconds: float

    def __str__(self) -> str:
        return f"delay {self.seconds:g} s"


@dataclass(frozen=True)
class Drop:
    """Close the connection without an answer; after the engine carried the request out if
    `after_forward`."""

    after_forward: bool = False

    def __str__(self) -> str:
        return "drop after forwarding" if self.after_forward else "drop"


@dataclass(frozen=True)
class Stale:
    """Answer an inspect with the body recorded for that container before the rule was injected
    (calls about containers not inspected before are forwarded and do not count)."""

    def __str__(self) -> str:
        return "stale"


@dataclass(frozen=True)
class Cut:
    """Forward an events request, then end the stream after `after_s`: cleanly (the last chunk,
    as the engine does when it shuts down) or by dropping the connection."""

    after_s: float = 0.0
    clean: bool = True

    def __str__(self) -> str:
        return f"cut after {self.after_s:g} s"


Fault = Respond | Delay | Drop | Stale | Cut


class Endpoint:
    """'METHOD /path/{id}/...' matched against a request, the API version prefix removed."""

    def __init__(self, spec: str) -> None:
        method, _, path = spec.partition(" ")
        self.spec = spec
        self.method = method.upper()
        pattern = re.escape(path).replace(re.escape("{id}"), "(?P<id>[^/]+)")
        self._path = re.compile(pattern + "$")

    def match(self, method: str, path: str) -> re.Match[str] | None:
        return self._path.match(path) if method == self.method else None


_KNOWN = [Endpoint(spec) for spec in KNOWN]


@dataclass(eq=False)
class Rule:
    endpoint: Endpoint
    fault: Fault
    remaining: int | None  # None: until cleared
    project: str | None
    container: str | None = None
    hits: int = 0
    frozen: dict[str, bytes] = field(default_factory=dict)  # Stale: inspect bodies by id

    @property
    def active(self) -> bool:
        return self.remaining is None or self.remaining > 0


@dataclass
class Call:
    """One request the proxy received, and what it did with it."""

    method: str
    path: str  # without the API version prefix and the query
    endpoint: str | None  # the known endpoint (LIST, START, ...) it matched, if any
    container: str | None  # the {id} of the path
    project: str | None  # the tether project it concerns, when the proxy can tell
    at: float  # time.monotonic() when received
    fault: str | None = None  # what the proxy did instead of (or besides) forwarding
    status: int | None = None  # the status the client got; None if none
    labels: dict[str, str] | None = None  # a create's container labels


@dataclass
class _Message:
    head: bytes  # the start line and headers, as received
    start: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def tokens(self, name: str) -> set[str]:
        return {t.strip().lower() for t in (self.header(name) or "").split(",") if t.strip()}

    @property
    def chunked(self) -> bool:
        return "chunked" in self.tokens("transfer-encoding")

    @property
    def length(self) -> int | None:
        value = self.header("content-length")
        return int(value) if value is not None else None


@dataclass
class _Request(_Message):
    method: str = ""
    target: str = ""
    version: str = ""
    body: bytes = b""  # as framed on the wire
    payload: bytes = b""  # decoded

    @property
    def path(self) -> str:
        return _API_VERSION.sub("", urlsplit(self.target).path)

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    @property
    def keep_alive(self) -> bool:
        if self.version == "HTTP/1.0":
            return "keep-alive" in self.tokens("connection")
        return "close" not in self.tokens("connection")


@dataclass
class _Upstream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class _Stream:
    """An events (or other streaming) response being relayed, which a test may end."""

    def __init__(self, endpoint: str | None) -> None:
        self.endpoint = endpoint
        self.ended = asyncio.Event()
        self.clean = True

    def end(self, *, clean: bool) -> None:
        self.clean = clean
        self.ended.set()


class FaultProxy:
    def __init__(self, path: str, upstream: str = "/var/run/docker.sock") -> None:
        self.path = path
        self.upstream = upstream
        self.calls: list[Call] = []
        self.rules: list[Rule] = []
        self._server: asyncio.Server | None = None
        self._closing = False
        self._connections: set[asyncio.Task[None]] = set()
        self.accepted = 0  # connections accepted, whether or not a request came on them
        self._streams: set[_Stream] = set()
        self._projects: dict[str, str] = {}  # container id -> project, learnt from the traffic
        self._inspected: dict[str, bytes] = {}  # container id -> its latest inspect body

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    # The test's controls

    def inject(
        self,
        endpoint: str,
        fault: Fault,
        *,
        times: int | None = None,
        project: str | None = None,
        container: str | None = None,
    ) -> Rule:
        """Apply `fault` to the next `times` calls to `endpoint` (all of them until cleared if
        None), only to those about `project`, or about the container with this id, if given.
        Earlier rules are tried first."""
        rule = Rule(Endpoint(endpoint), fault, times, project, container)
        if isinstance(fault, Stale):
            rule.frozen = {
                cid: body
                for cid, body in self._inspected.items()
                if project is None or self._projects.get(cid) == project
            }
        self.rules.append(rule)
        return rule

    def clear(self, rule: Rule | None = None) -> None:
        """Stop one rule, or all of them."""
        self.rules = [] if rule is None else [r for r in self.rules if r is not rule]

    def calls_to(
        self, endpoint: str | None = None, *, project: str | None = None, since: float = 0.0
    ) -> list[Call]:
        return [
            c
            for c in self.calls
            if (endpoint is None or c.endpoint == endpoint)
            and (project is None or c.project == project)
            and c.at >= since
        ]

    @property
    def open_streams(self) -> int:
        """Events streams relayed right now."""
        return sum(1 for s in self._streams if s.endpoint == EVENTS)

    def cut_event_streams(self, *, clean: bool = True) -> int:
        """End every events stream open now; returns how many."""
        streams = [s for s in self._streams if s.endpoint == EVENTS]
        for stream in streams:
            stream.end(clean=clean)
        return len(streams)

    def project_of(self, container_id: str) -> str | None:
        return self._projects.get(container_id)

    # Serving

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.accepted += 1
        try:
            await self._serve_connection(reader, writer)
        except asyncio.CancelledError:
            # Only `close()` cancels: end normally, since asyncio's stream server reports a
            # cancelled connection task as an error (Python 3.11).
            if not self._closing:
                raise
        finally:
            self._connections.discard(task)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        upstream: _Upstream | None = None
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                keep, upstream = await self._exchange(request, reader, writer, upstream)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # either side went away: so does this connection
        finally:
            writer.close()
            if upstream is not None:
                upstream.writer.close()
            await _close(writer)
            if upstream is not None:
                await _close(upstream.writer)

    async def _exchange(
        self,
        request: _Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: _Upstream | None,
    ) -> tuple[bool, _Upstream | None]:
        """One request and its answer; returns whether the client connection stays open, and
        the upstream connection to reuse."""
        call = self._record(request)
        rule = self._match(call)
        fault = rule.fault if rule is not None else None
        if rule is not None:
            rule.hits += 1
            if rule.remaining is not None:
                rule.remaining -= 1
            call.fault = str(fault)
        match fault:
            case Respond(status=status, body=body):
                call.status = status
                writer.write(_response(status, json.dumps(body).encode() if body else b""))
                await writer.drain()
                return request.keep_alive, upstream
            case Stale():
                assert rule is not None
                assert call.container is not None
                call.status = 200
                writer.write(_response(200, rule.frozen[call.container]))
                await writer.drain()
                return request.keep_alive, upstream
            case Drop(after_forward=False):
                writer.transport.abort()
                return False, upstream
            case Delay(seconds=seconds):
                await asyncio.sleep(seconds)

        opened = upstream is None
        if upstream is None:
            up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
            upstream = _Upstream(up_reader, up_writer)
        try:
            upstream.writer.write(request.head + request.body)
            await upstream.writer.drain()
            response = await _read_head(upstream.reader)
            status = int(response.start.split(" ", 2)[1])
            no_body = request.method == "HEAD" or status in (204, 304) or 100 <= status < 200
            call.status = status

            # After forwarding: the engine did it, the client never knows.
            if isinstance(fault, Drop):
                await _read_body(upstream.reader, response, no_body=no_body, until_eof=True)
                writer.transport.abort()
                await _close(upstream.writer)
                return False, None

            writer.write(response.head)
            if status == 101:  # hijacked (attach, exec): raw bytes both ways until either side ends
                await writer.drain()
                await _splice(reader, writer, upstream.reader, upstream.writer)
                await _close(upstream.writer)
                return False, None

            eof_framed = not no_body and not response.chunked and response.length is None
            streaming = call.endpoint in STREAMING and not no_body
            if streaming:
                ended = await self._relay_stream(call, reader, writer, upstream, response, fault)
                if ended:
                    await _close(upstream.writer)
                    return False, None
            else:
                collected = await _relay_body(upstream.reader, writer, response, no_body=no_body)
                self._learn(call, request, status, collected)

            upstream_keeps = (
                not eof_framed
                and "close" not in response.tokens("connection")
                and not response.start.startswith("HTTP/1.0")
            )
            if not upstream_keeps:
                await _close(upstream.writer)
                upstream = None
            return request.keep_alive and not eof_framed, upstream
        except BaseException:
            # The caller closes only the upstream it passed in: one opened here is closed here
            # when the exchange fails (a client gone mid-answer), or it would leak.
            if opened:
                upstream.writer.close()
            raise

    async def _relay_stream(
        self,
        call: Call,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: _Upstream,
        response: _Message,
        fault: Fault | None,
    ) -> bool:
        """Relay a streaming answer until it ends, the client leaves or a test ends it.
        Returns True if it did not end on its own (the connection cannot be reused)."""
        stream = _Stream(call.endpoint)
        self._streams.add(stream)
        timer = None
        if isinstance(fault, Cut):
            loop = asyncio.get_running_loop()
            timer = loop.call_later(fault.after_s, lambda: stream.end(clean=fault.clean))
        relay = asyncio.create_task(_relay_body(upstream.reader, writer, response, no_body=False))
        ended = asyncio.create_task(stream.ended.wait())
        # The client sends nothing while a stream is open: any read returning means it left.
        left = asyncio.create_task(reader.read(1))
        try:
            await asyncio.wait({relay, ended, left}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, ended, left):
                task.cancel()
            await asyncio.gather(relay, ended, left, return_exceptions=True)
            self._streams.discard(stream)
            if timer is not None:
                timer.cancel()
        if relay.done() and not relay.cancelled():
            if relay.exception() is None:
                return False  # the engine ended it: the connection can be reused
            writer.transport.abort()  # the engine's side failed: so does the client's
            return True
        if stream.ended.is_set() and stream.clean and response.chunked:
            writer.write(b"0\r\n\r\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        elif stream.ended.is_set():
            writer.transport.abort()
        return True

    # Bookkeeping

    def _record(self, request: _Request) -> Call:
        path = request.path
        endpoint = None
        container = None
        for known in _KNOWN:
            found = known.match(request.method, path)
            if found is not None:
                endpoint = known.spec
                container = found.groupdict().get("id")
                break
        call = Call(
            method=request.method,
            path=path,
            endpoint=endpoint,
            container=container,
            project=self._project_of_request(request, endpoint, container),
            at=time.monotonic(),
        )
        if endpoint == CREATE:
            with contextlib.suppress(ValueError, AttributeError):
                call.labels = dict(json.loads(request.payload).get("Labels") or {})
        self.calls.append(call)
        return call

    def _project_of_request(
        self, request: _Request, endpoint: str | None, container: str | None
    ) -> str | None:
        if container is not None:
            return self._projects.get(container)
        if endpoint in (LIST, VOLUME_LIST):
            for raw in request.query.get("filters", []):
                with contextlib.suppress(ValueError, AttributeError):
                    for label in json.loads(raw).get("label", []):
                        key, _, value = label.partition("=")
                        if key == LABEL_PROJECT:
                            return str(value)
        if endpoint in (CREATE, VOLUME_CREATE):
            with contextlib.suppress(ValueError, AttributeError):
                project = (json.loads(request.payload).get("Labels") or {}).get(LABEL_PROJECT)
                return str(project) if project else None
        return None

    def _match(self, call: Call) -> Rule | None:
        for rule in self.rules:
            if not rule.active or rule.endpoint.match(call.method, call.path) is None:
                continue
            if rule.project is not None and call.project != rule.project:
                continue
            if rule.container is not None and call.container != rule.container:
                continue
            if isinstance(rule.fault, Stale) and call.container not in rule.frozen:
                continue
            if isinstance(rule.fault, Cut) and call.endpoint not in STREAMING:
                continue
            return rule
        return None

    def _learn(self, call: Call, request: _Request, status: int, body: bytes | None) -> None:
        """Remember which project each container belongs to, and the latest inspect bodies."""
        if body is None or not 200 <= status < 300:
            return
        try:
            data = json.loads(body)
        except ValueError:
            return
        if call.endpoint == CREATE and call.project and isinstance(data, dict):
            self._projects[data["Id"]] = call.project
        elif call.endpoint == INSPECT and isinstance(data, dict) and call.container:
            self._inspected[call.container] = body
            project = ((data.get("Config") or {}).get("Labels") or {}).get(LABEL_PROJECT)
            if project:
                self._projects[data["Id"]] = project
                self._projects[call.container] = project
        elif call.endpoint == LIST and isinstance(data, list):
            for item in data:
                project = (item.get("Labels") or {}).get(LABEL_PROJECT)
                if project:
                    self._projects[item["Id"]] = project


# HTTP/1.1 framing


async def _read_head(reader: asyncio.StreamReader) -> _Message:
    head = await reader.readuntil(b"\r\n\r\n")
    start, *lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines:
        if line:
            key, _, value = line.partition(":")
            headers.append((key.strip(), value.strip()))
    return _Message(head=head, start=start, headers=headers)


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        message = await _read_head(reader)
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None  # the client closed a kept-alive connection
    method, target, version = message.start.split(" ", 2)
    request = _Request(
        head=message.head,
        start=message.start,
        headers=message.headers,
        method=method.upper(),
        target=target,
        version=version,
    )
    raw = bytearray()
    payload = bytearray()
    async for wire, data in _body_parts(reader, request, until_eof=False):
        raw += wire
        payload += data
    request.body, request.payload = bytes(raw), bytes(payload)
    return request


async def _body_parts(
    reader: asyncio.StreamReader, message: _Message, *, until_eof: bool
) -> AsyncIterator[tuple[bytes, bytes]]:
    """(bytes as on the wire, decoded bytes) pieces of a message body, as they arrive."""
    if message.chunked:
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                trailer = bytearray(line)
                while True:
                    more = await reader.readuntil(b"\r\n")
                    trailer += more
                    if more == b"\r\n":
                        break
                yield bytes(trailer), b""
                return
            chunk = await reader.readexactly(size + 2)
            yield line + chunk, chunk[:-2]
    elif message.length is not None:
        left = message.length
        while left > 0:
            piece = await reader.read(min(left, _CHUNK))
            if not piece:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(piece)
            yield piece, piece
    elif until_eof:
        while piece := await reader.read(_CHUNK):
            yield piece, piece


async def _read_body(
    reader: asyncio.StreamReader, message: _Message, *, no_body: bool, until_eof: bool
) -> None:
    if no_body:
        return
    async for _wire, _data in _body_parts(reader, message, until_eof=until_eof):
        pass


async def _relay_body(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    message: _Message,
    *,
    no_body: bool,
) -> bytes | None:
    """Forward a response body piece by piece as it arrives; returns the decoded body of small
    answers (for learning), None for large or streamed ones."""
    if no_body:
        await writer.drain()
        return None
    collected: bytearray | None = bytearray()
    async for wire, data in _body_parts(reader, message, until_eof=True):
        writer.write(wire)
        await writer.drain()
        if collected is not None:
            collected += data
            if len(collected) > 4 * 1024 * 1024:
                collected = None
    return bytes(collected) if collected is not None else None


def _response(status: int, body: bytes) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Api-Version: 1.41",
        "Server: tether-faultproxy",
    ]
    if status not in (204, 304):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while piece := await src.read(_CHUNK):
                dst.write(piece)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()

    tasks = [
        asyncio.create_task(pipe(reader, up_writer)),
        asyncio.create_task(pipe(up_reader, writer)),
    ]
    try:
        # The engine ends a hijacked stream when the process ends; the client may half-close
        # its side (stdin done) and still read: wait for the engine's side to end.
        await tasks[1]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


def unix_socket_of(docker_url: str) -> str:
    """The socket path of a unix:// Docker URL."""
    if not docker_url.startswith("unix://"):
        raise ValueError(f"the fault proxy forwards to a unix socket, not {docker_url!r}")
    return docker_url.removeprefix("unix://")


def summary(calls: Iterable[Call]) -> list[tuple[str | None, str | None, int | None]]:
    """(endpoint, fault, status) of each call: readable in assertion messages."""
    return [(c.endpoint, c.fault, c.status) for c in calls]
