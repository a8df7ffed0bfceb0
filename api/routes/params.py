"""The request parameters several routes share: the project name in the path, and If-Match."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Path
from pydantic import WithJsonSchema

from tether.api.errors import TetherError
from tether.api.models import PROJECT_NAME_PATTERN

NamePath = Annotated[str, Path(pattern=PROJECT_NAME_PATTERN, description="The project name.")]

# What `expected_generation` takes: a generation, optionally quoted as an ETag, weak or not.
IF_MATCH_PATTERN = r'^[ \t]*(W/)?"*[0-9]+"*[ \t]*$'
IfMatch = Annotated[
    str | None,
    # Documented as what it takes; checked by `expected_generation`, which says what is wrong (400).
    WithJsonSchema({"type": "string", "pattern": IF_MATCH_PATTERN, "examples": ['"3"']}),
    Header(alias="If-Match", description="Refuse the write (412) unless at this generation."),
]


def expected_generation(value: str | None) -> int | None:
    """The generation an If-Match header names (None without one); 400 for anything else."""
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not (text.isascii() and text.isdigit()):  # isdigit() alone takes '²', int() does not
        raise TetherError(
            f"If-Match must be a project generation (a whole number), not {value!r}",
            hint="use the `generation` of the project as read from the API",
        )
    return int(text)
