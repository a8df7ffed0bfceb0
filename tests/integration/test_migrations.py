"""Migrations replayed on an empty database give exactly the documented schema, and concurrent
`migrate` runs apply each file once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from tether.api.migrator import available, migrate
from tether.api.models import Principal, TcpCheck
from tether.api.store import Store

NewDatabase = Callable[[], Awaitable[str]]
SCHEMA = Path(__file__).parents[2] / "docs" / "schema.sql"

# Everything that makes a schema what it is, in a form that does not depend on creation order.
CATALOG = """
SELECT 'column' AS kind, table_name || '.' || column_name AS name,
       concat_ws(' ', data_type, is_nullable, column_default, is_identity) AS definition
FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'constraint', conrelid::regclass || '.' || conname, pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
ORDER BY 1, 2
"""


async def catalog(dsn: str) -> list[tuple[str, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(CATALOG)
    finally:
        await conn.close()
    return [
        (r["kind"], r["name"], r["definition"])
        for r in rows
        if not r["name"].startswith("tether_migrations")
    ]


async def test_migrations_produce_the_documented_schema(new_database: NewDatabase) -> None:
    migrated, documented = await new_database(), await new_database()
    applied = await migrate(migrated)
    assert [m.version for m in applied] == [m.version for m in available()]
    conn = await asyncpg.connect(documented)
    try:
        await conn.execute(SCHEMA.read_text())
    finally:
        await conn.close()

    expected = await catalog(documented)
    assert any(kind == "constraint" for kind, _, _ in expected)
    assert await catalog(migrated) == expected


async def test_migrate_twice_applies_nothing_the_second_time(new_database: NewDatabase) -> None:
    dsn = await new_database()
    assert await migrate(dsn)
    assert await migrate(dsn) == []


async def test_concurrent_migrations_apply_each_file_once(new_database: NewDatabase) -> None:
    dsn = await new_database()
    results = await asyncio.gather(*(migrate(dsn) for _ in range(4)))
    applied = sorted(m.version for result in results for m in result)
    assert applied == [m.version for m in available()]
    conn = await asyncpg.connect(dsn)
    try:
        recorded = await conn.fetchval("SELECT count(*) FROM tether_migrations")
    finally:
        await conn.close()
    assert recorded == len(available())


async def test_0007_drops_the_null_path_of_stored_tcp_checks(new_database: NewDatabase) -> None:
    """Deployments stored before the health check became a union (`tcp` has no path) read back
    as the API's models after 0007."""
    dsn = await new_database()
    conn = await asyncpg.connect(dsn)
    try:
        for migration in available():
            if migration.version < 7:
                await conn.execute(migration.sql)
        await conn.execute(
            "INSERT INTO projects (name, owner, host_port) VALUES ('shop', 'alice', 20000)"
        )
        await conn.execute(
            "INSERT INTO deployments (project, version, image, port, health, created_by) "
            "VALUES ('shop', 1, 'nginx:1', 80, $1::jsonb, 'alice')",
            '{"type": "tcp", "path": null, "interval_s": 2.0, "timeout_s": 2.0}',
        )
        await conn.execute(next(m for m in available() if m.version == 7).sql)
    finally:
        await conn.close()
    store = await Store.connect(dsn)
    try:
        (deployment,) = await store.deployments("shop", Principal(owner="alice"))
    finally:
        await store.close()
    assert deployment.health == TcpCheck(type="tcp")
