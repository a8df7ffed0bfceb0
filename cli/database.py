"""The commands that only use the database: `tether migrate` and `tether token create`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from tether.cli.output import say
from tether.cli.problems import database, redact

if TYPE_CHECKING:
    from tether.api.migrator import Migration
    from tether.api.settings import Settings


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


def create_token(settings: Settings, owner: str, *, admin: bool) -> str:
    return asyncio.run(_create_token(settings, owner, admin))


async def _create_token(settings: Settings, owner: str, admin: bool) -> str:
    from tether.api.store import Store

    with database(settings.database_url):
        store = await Store.connect(settings.database_url, settings.ports)
        try:
            return await store.create_token(owner, admin=admin)
        finally:
            await store.close()
