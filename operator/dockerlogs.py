"""Docker's log streams, as both runtimes read them for `tether logs`: a container's output
(`containers/ID/logs`, the engine) or a service's (`services/ID/logs`, Swarm), stdout and
stderr multiplexed in frames, each line stamped with its time.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime

import aiohttp

from tether.api.models import LogStream
from tether.operator.dockerapi import DockerCalls
from tether.operator.dockertime import docker_time, parse_time


def log_params(
    *, follow: bool, tail: int | None, since: datetime | None, details: bool = False
) -> dict[str, str]:
    """The query of a logs request: both streams, with timestamps (and, for a service, each
    line's task: `details`)."""
    params = {"stdout": "1", "stderr": "1", "timestamps": "1", "follow": "1" if follow else "0"}
    if details:
        params["details"] = "1"
    if tail is not None:
        params["tail"] = str(tail)
    if since is not None:
        params["since"] = docker_time(since)
    return params


async def log_lines(
    calls: DockerCalls, path: str, params: dict[str, str]
) -> AsyncGenerator[tuple[LogStream, bytes], None]:
    """The lines of one logs request, each with the stream it came from, in the order Docker
    sends them, until the output ends (with `follow`: until Docker ends it). Raises
    `aiodocker.DockerError` as Docker answered (a 404: no such container or service), and the
    driver's `unavailable` fault when the request could not be made."""
    # A read that does not follow ends when Docker has sent what it has; one that goes silent
    # for a whole deadline is over (a service's, gathered from several nodes, can hang).
    silence = None if params.get("follow") == "1" else calls.call_timeout_s
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=calls.call_timeout_s, sock_read=silence
    )
    # aiodocker's `container.log()` drops which stream a line came from, and leaves the
    # connection open when a follow is abandoned: the request is made here, its frames read
    # here, and its connection closed here whatever happens.
    try:
        async with calls.client._query(path, params=params, timeout=timeout) as response:
            try:
                pending: dict[LogStream, bytes] = {}
                async for stream, payload in _frames(response.content):
                    *complete, pending[stream] = (pending.get(stream, b"") + payload).split(b"\n")
                    for raw in complete:
                        yield stream, raw
                for stream, rest in pending.items():
                    if rest:
                        yield stream, rest
            finally:
                response.close()
    except aiohttp.ClientError as exc:  # the request failed (a broken stream just ends)
        raise calls.unavailable("logs", str(exc) or type(exc).__name__, None) from exc


def stamped(raw: bytes) -> tuple[datetime | None, str]:
    """A line as Docker sends it with timestamps, `2024-05-01T12:00:00.123456789Z text`: its
    time and the rest (None and the whole line, for a line that does not start with one)."""
    text = raw.decode(errors="replace").rstrip("\r")
    stamp, _, rest = text.partition(" ")
    try:
        return parse_time(stamp), rest
    except ValueError:
        return None, text


async def _frames(content: aiohttp.StreamReader) -> AsyncIterator[tuple[LogStream, bytes]]:
    """Docker's multiplexed output of a container without a TTY (tether never gives one): frames
    of an 8-byte header (the stream: 1 stdout, 2 stderr; the length) and the bytes written."""
    while True:
        try:
            header = await content.readexactly(8)
            kind, length = struct.unpack(">BxxxL", header)
            payload = await content.readexactly(length)
        except (asyncio.IncompleteReadError, aiohttp.ClientError):
            return  # the end of the output, or a broken stream: the caller looks again
        yield ("stderr" if kind == 2 else "stdout"), payload
