"""The CLI's plain tables are drawn exactly as rich draws them (`tether.cli.render.draw`), and
rich still draws what does not fit in plain text. Pure: no server."""

from __future__ import annotations

import io
import random
import string
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout

import pytest
from rich.text import Text

from tether.cli import render


@contextmanager
def _captured() -> Iterator[io.StringIO]:
    with redirect_stdout(io.StringIO()) as out:
        yield out


def _by_rich(headers: tuple[str, ...], rows: list[list[str]]) -> str:
    table = render._table(*headers)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    with _captured() as out:
        render.show(table)
    return out.getvalue()


def _drawn(headers: tuple[str, ...], rows: list[list[str]]) -> str:
    with _captured() as out:
        render.draw(headers, rows)
    return out.getvalue()


@pytest.mark.parametrize("seed", range(25))
def test_a_plain_table_is_drawn_as_rich_draws_it(seed: int) -> None:
    rng = random.Random(seed)
    headers = tuple(
        rng.choice(["name", "desired", "ready", "message", "", "host port"])
        for _ in range(rng.randint(1, 7))
    )
    alphabet = string.ascii_letters + string.digits + " .:-()"
    rows = [
        ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24))).strip() for _ in headers]
        for _ in range(rng.randint(1, 6))
    ]
    assert render._plain(headers, rows) is not None
    assert _drawn(headers, rows) == _by_rich(headers, rows)


@pytest.mark.parametrize(
    "cell", ["x" * (render.PIPE_WIDTH + 1), "v1 is ready • on 127.0.0.1", "two\nlines"]
)
def test_what_plain_text_cannot_draw_rich_draws(cell: str) -> None:
    headers, rows = ("name", "message"), [["shop", cell]]
    assert render._plain(headers, rows) is None
    assert _drawn(headers, rows) == _by_rich(headers, rows)
