"""`tether api` with one change applied, for what-if measurements (docs/benchmarks.md, item 6):
not tether as shipped. BENCH_VARIANT is a comma-separated list of:

- `no-pool-reset`: the store's asyncpg pool skips its reset query on every release (`SELECT
  pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;`, one round trip), as
  `asyncpg.create_pool(..., reset=...)` allows; an open transaction is still rolled back.
- `token-cache`: `Store.authenticate` answers from a 10-second cache of token hash → principal.
- `nodelay`: the listening socket `tether.cli.server.bind` returns gets TCP_NODELAY, which the
  connections it accepts inherit. (`socket.create_server` makes sockets with proto 0, on which
  asyncio does not set TCP_NODELAY itself, so uvicorn's responses, written in two parts, wait
  for the client's delayed ACK.)

Run as `python bench/api_variant.py` with the TETHER_* variables of `tether api`.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

import asyncpg

from tether.api.models import Principal
from tether.api.store import Store, hash_token
from tether.cli.main import run

TOKEN_TTL_S = 10.0


def no_pool_reset() -> None:
    original = asyncpg.create_pool

    async def keep_session(_conn: Any) -> None:
        pass  # tether's pool connections hold no session state: no LISTEN, SET, cursors, locks

    def create_pool(*args: Any, **kwargs: Any) -> Any:
        return original(*args, reset=keep_session, **kwargs)

    asyncpg.create_pool = create_pool  # type: ignore[assignment]


def token_cache() -> None:
    original = Store.authenticate
    cache: dict[str, tuple[float, Principal | None]] = {}

    async def authenticate(self: Store, token: str) -> Principal | None:
        key = hash_token(token)
        hit = cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        found = await original(self, token)
        if found is not None:
            cache[key] = (time.monotonic() + TOKEN_TTL_S, found)
        return found

    Store.authenticate = authenticate  # type: ignore[method-assign]


def nodelay() -> None:
    from tether.cli import server

    original = server.bind

    def bind(*args: Any, **kwargs: Any) -> socket.socket:
        sock = original(*args, **kwargs)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    server.bind = bind


def main() -> None:
    patches = {"no-pool-reset": no_pool_reset, "token-cache": token_cache, "nodelay": nodelay}
    for variant in filter(None, os.environ.get("BENCH_VARIANT", "").split(",")):
        patches[variant]()
    sys.exit(run(["api"]))


if __name__ == "__main__":
    main()
