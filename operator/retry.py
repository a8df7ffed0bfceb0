"""How long a project whose pass failed waits before the next one, whatever the runtime."""

from __future__ import annotations

RETRY_FIRST_S = 0.5
RETRY_CAP_S = 60.0
RETRY_JITTER = 0.2


def retry_delay(attempts: int, jitter: float) -> float:
    """Backoff after `attempts` failed passes in a row: 0.5 s doubling to 60 s, ±20 %.
    `jitter` is a number in [-1, 1], drawn by the caller."""
    base = min(RETRY_FIRST_S * 2.0 ** min(max(attempts - 1, 0), 16), RETRY_CAP_S)
    return base * (1 + RETRY_JITTER * jitter)
