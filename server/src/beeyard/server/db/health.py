"""What the detailed health view asks of the database: plain SQL, like every query."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from beeyard.server.db import migrate


@dataclass(frozen=True)
class DatabaseFacts:
    server_version: str
    size_bytes: int
    migrations: dict[str, object]


async def facts(pool: asyncpg.Pool) -> DatabaseFacts:
    """The server's version, this database's size and the migration status, over one
    connection, so that timing the call measures one round of real work."""
    async with pool.acquire() as conn:
        server_version = await conn.fetchval("SHOW server_version")
        migrations = await migrate.status(conn)
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
    return DatabaseFacts(str(server_version), int(size), migrations)
