"""Reading a project's events page by page (`GET /v1/projects/NAME/events?after=ID&limit=N`)."""

from __future__ import annotations

from typing import Any

PAGE = 1000


def path(name: str) -> str:
    return f"/projects/{name}/events"


def query(after: int) -> dict[str, int]:
    return {"after": after, "limit": PAGE}


def add_page(found: list[Any], page: list[Any], tail: int | None) -> int | None:
    """Add one page (oldest first) to `found`, keeping only the last `tail` if given; the id to
    read the next page after, or None when this page was the last."""
    found.extend(page)
    if tail is not None:
        del found[:-tail]
    return int(page[-1]["id"]) if len(page) == PAGE else None
