"""One HTTP/1.1 request and its whole answer, over a plain socket.

The one-request commands (`tether status`, `tether start`, ...) must answer in 150 ms, Python's
start included. `http.client` costs ~35 ms to import (the `email` package for its headers, `ssl`),
httpx ~100 ms: for plain http, this module sends the request with `Connection: close` and reads
the answer to its end instead. https goes through `http.client`. The streams use httpx
(`tether.cli.stream`).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import SplitResult


class BadAnswer(OSError):
    """What came back is not an HTTP/1.x answer."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def request(
    url: SplitResult,
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes | None,
    timeout_s: float,
) -> Answer:
    """Send one request to `url`'s host (an `OSError`, `TimeoutError` among them, when none
    came back); the answer's status and body."""
    if url.scheme == "https":
        return _https(url, method, target, headers, body, timeout_s)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    head = [f"{method} {target} HTTP/1.1", f"Host: {url.netloc}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head.append(f"Content-Length: {len(body or b'')}")
    message = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
    # An ASCII host as bytes: a str would be encoded with the idna codec (its import: ~4 ms).
    # getaddrinfo, under create_connection, takes bytes; typeshed's signature says str only.
    address = host.encode() if host.isascii() else host
    with socket.create_connection((address, port), timeout=timeout_s) as conn:  # type: ignore[arg-type]
        conn.sendall(message)
        chunks = []
        while data := conn.recv(65536):
            chunks.append(data)
    return _parse(b"".join(chunks))


def _parse(raw: bytes) -> Answer:
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if not sep or len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise BadAnswer(f"not an HTTP answer: {raw[:40]!r}")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if fields.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    elif "content-length" in fields:
        body = body[: int(fields["content-length"])]
    return Answer(int(parts[1]), body)


def _unchunk(data: bytes) -> bytes:
    out, rest = [], data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2 :]
    return b"".join(out)


def _https(
    url: SplitResult,
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes | None,
    timeout_s: float,
) -> Answer:
    import http.client

    conn = http.client.HTTPSConnection(url.netloc, timeout=timeout_s)
    try:
        conn.request(method, target, body=body, headers=headers)
        response = conn.getresponse()
        return Answer(response.status, response.read())
    except http.client.HTTPException as exc:
        raise BadAnswer(str(exc)) from exc
    finally:
        conn.close()
