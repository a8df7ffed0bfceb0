"""Applies the numbered SQL files in `migrations/`, each exactly once, under an advisory lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

# Any constant works; it only has to be the same for every tether process.
_LOCK_KEY = 0x7E7E_0001
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    found = []
    for entry in resources.files("tether.migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number: {versions}")
    return found


async def migrate(dsn: str) -> list[Migration]:
    """Apply the pending migrations in one transaction and return them.

    The transaction-scoped advisory lock makes a concurrent `tether migrate` wait, then find the
    files already recorded and apply nothing.
    """
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS tether_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM tether_migrations")}
            pending = [m for m in available() if m.version not in done]
            for migration in pending:
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO tether_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
        return pending
    finally:
        await conn.close()


async def pending(dsn: str) -> list[Migration]:
    """The migrations not yet applied (for readiness checks)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        exists = await conn.fetchval("SELECT to_regclass('tether_migrations') IS NOT NULL")
        done = (
            {r["version"] for r in await conn.fetch("SELECT version FROM tether_migrations")}
            if exists
            else set()
        )
    finally:
        await conn.close()
    return [m for m in available() if m.version not in done]
