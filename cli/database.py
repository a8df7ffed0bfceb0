"""The commands that only use the database: `tether migrate` and `tether token ...`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from tether.cli.errors import CliError
from tether.cli.output import say
from tether.cli.problems import database, redact

if TYPE_CHECKING:
    from tether.api.migrator import Migration
    from tether.api.models import NewToken, TokenInfo
    from tether.api.settings import Settings
    from tether.api.store import Store

T = TypeVar("T")


def migrate(settings: Settings) -> None:
    from tether.api.migrator import available

    applied = asyncio.run(apply_migrations(settings.database_url))
    report_migrations(applied, len(available()), settings.database_url)


async def apply_migrations(dsn: str) -> list[Migration]:
    from tether.api.migrator import migrate as apply

    with database(dsn):
        return await apply(dsn)


def report_migrations(applied: list[Migration], total: int, dsn: str) -> None:
    for migration in applied:
        say(f"applied migration {migration.version:04d}_{migration.name}")
    if applied:
        say(f"database {redact(dsn)} is up to date ({total} migrations)")
    else:
        say(f"nothing to apply: database {redact(dsn)} is up to date ({total} migrations)")


def create_token(
    settings: Settings,
    owner: str,
    *,
    admin: bool,
    read_only: bool = False,
    expires_in_s: float | None = None,
) -> NewToken:
    return _with_store(
        settings,
        lambda store: store.issue_token(
            owner, admin=admin, read_only=read_only, expires_in_s=expires_in_s
        ),
    )


def list_tokens(settings: Settings) -> list[TokenInfo]:
    return _with_store(settings, lambda store: store.tokens())


def revoke_token(settings: Settings, token_id: int) -> datetime:
    revoked_at = _with_store(settings, lambda store: store.revoke_token(token_id))
    if revoked_at is None:
        raise CliError(f"there is no token {token_id}; list them with `tether token list`")
    return revoked_at


async def connect(settings: Settings, dsn: str | None = None) -> Store:
    """A store on the settings' database (or `dsn`), tuned as they say."""
    from tether.api.store import Store

    return await Store.connect(
        dsn or settings.database_url,
        settings.ports,
        settings.database_pool_size,
        token_trusted_s=settings.token_cache_s,
        command_timeout_s=settings.database_timeout_s,
    )


def _with_store(settings: Settings, use: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        with database(settings.database_url):
            store = await connect(settings)
            try:
                return await use(store)
            finally:
                await store.close()

    return asyncio.run(run())
