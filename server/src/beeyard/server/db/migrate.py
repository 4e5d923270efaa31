"""Numbered plain-SQL migrations, applied at start under an advisory lock.

Files are ``NNNN_name.sql`` in ``migrations/``; each runs in its own
transaction and is recorded with its checksum, so several replicas starting at
once apply each exactly once, and an edited, already-applied file is reported
rather than silently ignored.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger("beeyard.server.db.migrate")

_LOCK_ID = 0x62656579  # "beey": the advisory lock all replicas take while migrating
_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    found = []
    for entry in resources.files("beeyard.server.db").joinpath("migrations").iterdir():
        m = _NAME.fullmatch(entry.name)
        if m:
            found.append(Migration(int(m[1]), m[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers: {versions}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply what is missing; return the versions applied now."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {r["version"]: r["checksum"] for r in await conn.fetch(
            "SELECT version, checksum FROM schema_migrations")}
        done = []
        for m in available():
            if m.version in applied:
                if applied[m.version] != m.checksum:
                    log.warning("migration %04d_%s changed after it was applied", m.version, m.name)
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version, m.name, m.checksum,
                )
            log.info("applied migration %04d_%s", m.version, m.name)
            done.append(m.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


async def status(conn: asyncpg.Connection) -> dict[str, object]:
    rows = await conn.fetch(
        "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
    )
    latest = available()[-1].version
    current = rows[-1]["version"] if rows else 0
    return {
        "current": current,
        "latest": latest,
        "pending": [m.version for m in available() if m.version > current],
        "applied": [dict(r) for r in rows],
    }
