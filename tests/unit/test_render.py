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


def test_volumes_say_their_size_who_mounts_them_and_when_unmounted() -> None:
    from tether.cli.views import Volume

    mounted = Volume.of(
        {
            "name": "data",
            "docker_name": "tether.default.shop.data",
            "size_bytes": 3 * 1024 * 1024,
            "mounted_by": ["tether-shop-v2-r0"],
            "in_target": True,
            "created_at": "2026-12-01T10:00:00+00:00",
        }
    )
    dropped = Volume.of(
        {
            "name": "old",
            "docker_name": "tether.default.shop.old",
            "size_bytes": None,
            "mounted_by": [],
            "in_target": False,
            "created_at": None,
        }
    )
    with _captured() as out:
        render.volumes_table("shop", [mounted, dropped])
    [header, first, second] = out.getvalue().splitlines()
    assert header.split() == ["VOLUME", "DOCKER", "VOLUME", "SIZE", "MOUNTED", "BY", "AGE"]
    assert "3.0 MiB" in first
    assert "tether-shop-v2-r0" in first
    assert "not measured yet" in second
    assert "unmounted (not in the target deployment; no container)" in second
    assert render.size(512) == "512 B"
    assert render.size(1536) == "1.5 KiB"
