"""Loads `queries.sql`: every query tether runs, each under a `-- name: x` header."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^-- name: ([a-z_]+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Split a queries file into {name: sql}. Text before the first header is a comment."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


@cache
def load() -> dict[str, str]:
    return parse(resources.files("tether.api").joinpath("queries.sql").read_text())


def sql(name: str) -> str:
    return load()[name]
