"""Failed authentications, rate-limited per client address with a token bucket.

Each address has a bucket of `burst` failures that refills evenly over `window_s`. A failed
authentication (a token that is not valid) takes one; an address whose bucket is empty is refused
with 429 and a `Retry-After` before its token is even looked at, so that guessing gains nothing
while it is refused. Successful authentications take nothing: a busy client with a valid token is
never limited. No I/O is done here; the clock is injectable.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_ADDRESSES = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class FailureLimiter:
    def __init__(
        self,
        burst: int,
        window_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        if burst < 1 or window_s <= 0:
            raise ValueError("burst must be at least 1 and window_s more than 0")
        self.burst = burst
        self.window_s = window_s
        self._rate = burst / window_s  # failures regained per second
        self._clock = clock
        self._max = max_addresses
        # Least recently failed first: when full, the address forgotten is the one that failed
        # longest ago (whose bucket is the likeliest to be full again anyway).
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _refilled(self, address: str) -> _Bucket | None:
        bucket = self._buckets.get(address)
        if bucket is None:
            return None
        now = self._clock()
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        if bucket.tokens >= self.burst:
            del self._buckets[address]  # full again: as if it never failed
            return None
        return bucket

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until `address` may try again, or None if it may now."""
        bucket = self._refilled(address)
        if bucket is None or bucket.tokens >= 1:
            return None
        return max(1, math.ceil((1 - bucket.tokens) / self._rate))

    def failed(self, address: str) -> None:
        """Record a failed authentication from `address`."""
        bucket = self._refilled(address)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), at=self._clock())
            self._buckets[address] = bucket
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        # Concurrent failures may all pass the check: the bucket does not go below empty.
        bucket.tokens = max(0.0, bucket.tokens - 1)
        self._buckets.move_to_end(address)

    def __len__(self) -> int:
        return len(self._buckets)
