"""Volume backups: `tether volume export NAME VOLUME > file.tar` and
`tether volume import NAME VOLUME < file.tar`, streamed through the API (httpx), never held whole.
"""

# No `from __future__ import annotations` in the command modules: typer would eval each
# annotation string on every run (~25 ms of a command's 150; see cli/options.py).

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated

import typer

from tether.cli.errors import EXIT_USAGE, CliError
from tether.cli.options import Name, invocation
from tether.cli.output import say

CHUNK_BYTES = 64 * 1024

VolumeName = Annotated[str, typer.Argument(help="The volume's name (see `tether volumes NAME`).")]
File = Annotated[
    Path | None,
    typer.Option(
        "--file", "-f", metavar="PATH", help="Write (export) or read (import) this file instead."
    ),
]


def _path(name: str, volume: str) -> str:
    return f"/v1/projects/{name}/volumes/{volume}/archive"


@contextlib.contextmanager
def _opened(file: Path | None, mode: str, std: IO[bytes]) -> Iterator[IO[bytes]]:
    if file is None:
        yield std
        return
    try:
        with file.open(mode) as opened:
            yield opened
    except OSError as exc:
        raise CliError(f"cannot open {file}: {exc.strerror}") from exc


def _transfer(
    ctx: typer.Context,
    method: str,
    path: str,
    *,
    sink: IO[bytes] | None = None,
    source: IO[bytes] | None = None,
) -> int:
    """One streamed request; the bytes it carried."""
    import httpx

    from tether.cli.client import NoAnswer, api_failure, headers_for, transport_problem

    config = invocation(ctx).config()
    carried = 0

    def upload() -> Iterator[bytes]:
        nonlocal carried
        assert source is not None
        while chunk := source.read(CHUNK_BYTES):
            carried += len(chunk)
            yield chunk

    headers = headers_for(config)
    if source is not None:
        headers["Content-Type"] = "application/x-tar"
    # Reads may pause while Docker walks the volume: only connecting is bounded by TETHER_TIMEOUT.
    timeout = httpx.Timeout(None, connect=config.timeout_s)
    try:
        with httpx.Client(base_url=config.url, headers=headers, timeout=timeout) as http:
            body = upload() if source is not None else None
            with http.stream(method, path, content=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise api_failure(config.url, response.status_code, response.text)
                if sink is not None:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        sink.write(chunk)
                        carried += len(chunk)
                    sink.flush()
    except httpx.TransportError as exc:
        kind = NoAnswer.CONNECT if isinstance(exc, httpx.ConnectError) else NoAnswer.BROKEN
        raise transport_problem(config.url, config.timeout_s, exc, kind) from exc
    return carried


def export(ctx: typer.Context, name: Name, volume: VolumeName, file: File = None) -> None:
    """Write the volume as a tar archive to stdout (or --file); the project must be stopped."""
    if file is None and sys.stdout.isatty():
        say("refusing to write a tar archive to a terminal: redirect it (> file.tar) or use --file")
        raise typer.Exit(EXIT_USAGE)
    with _opened(file, "wb", sys.stdout.buffer) as sink:
        carried = _transfer(ctx, "GET", _path(name, volume), sink=sink)
    sys.stderr.write(f"{name}: exported volume {volume} ({carried} bytes)\n")


def import_(ctx: typer.Context, name: Name, volume: VolumeName, file: File = None) -> None:
    """Write a tar archive from stdin (or --file) into the volume, over what it holds; the
    project must be stopped. A bad archive is refused and the volume left unchanged."""
    if file is None and sys.stdin.isatty():
        say("expected a tar archive on stdin (< file.tar) or --file PATH")
        raise typer.Exit(EXIT_USAGE)
    with _opened(file, "rb", sys.stdin.buffer) as source:
        carried = _transfer(ctx, "PUT", _path(name, volume), source=source)
    say(f"{name}: imported {carried} bytes into volume {volume}")
