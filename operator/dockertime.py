"""Times as the Docker API writes and takes them, for both runtimes' drivers."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time of Docker's; None for none, or for Go's zero time (never happened)."""
    if not value or value.startswith("0001-01-01"):
        return None
    # Docker writes nanoseconds; Python reads at most microseconds.
    head, _, frac = value.rstrip("Z").partition(".")
    micros = (frac + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{micros}").replace(tzinfo=UTC)


def docker_time(when: datetime) -> str:
    """A time as the Docker API takes it (`since`): Unix seconds with nine decimals."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    whole = int(when.replace(microsecond=0).timestamp())
    return f"{whole}.{when.microsecond:06d}000"
