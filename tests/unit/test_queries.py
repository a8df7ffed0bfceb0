"""queries.sql and the store agree: every query the store names exists, and none is dead."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tether.api.queries import load, parse

STORE = Path(__file__).parents[2] / "api" / "store.py"


def test_every_query_is_defined_once_and_used() -> None:
    used = set(re.findall(r'sql\("([a-z_]+)"\)', STORE.read_text()))
    defined = set(load())
    assert used - defined == set(), "the store names queries that queries.sql lacks"
    assert defined - used == set(), "queries.sql has queries nothing uses"


def test_a_query_defined_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
