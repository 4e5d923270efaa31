"""Enrollment codes: plain SQL for the enrollments table.

A code is stored as its SHA-256 digest with its first 8 characters for
display. Consuming one is a single conditional ``UPDATE ... RETURNING`` in the
same transaction that creates the server, so two registrations racing on one
code cannot both succeed: the second finds ``consumed_at`` already set (row
locks serialise them) and creates nothing.
"""

from __future__ import annotations

from typing import Any

import asyncpg

# Codes minted and never used pile up otherwise; a script minting one per host stays far below.
MAX_PENDING = 1000

_COLUMNS = """id, code_prefix, created_at, expires_at, consumed_at, server_id,
    CASE WHEN consumed_at IS NOT NULL THEN 'consumed'
         WHEN expires_at <= now() THEN 'expired' ELSE 'pending' END AS status"""


class TooMany(Exception):
    """``MAX_PENDING`` unexpired, unused codes exist already."""


async def create(
    pool: asyncpg.Pool, *, prefix: str, digest: bytes, created_by: int | None,
    ttl_seconds: int,
) -> dict[str, Any]:
    """Store a new code's digest; ``created_by`` is None when the server minted it itself
    (the demo enrolling its own machine)."""
    async with pool.acquire() as conn, conn.transaction():
        # Serialise mints so that the count below cannot be overtaken by a concurrent one.
        await conn.execute("LOCK TABLE enrollments IN SHARE ROW EXCLUSIVE MODE")
        pending = await conn.fetchval(
            "SELECT count(*) FROM enrollments WHERE consumed_at IS NULL AND expires_at > now()"
        )
        if pending >= MAX_PENDING:
            raise TooMany()
        row = await conn.fetchrow(
            f"""INSERT INTO enrollments (code_prefix, code_digest, created_by, expires_at)
                VALUES ($1, $2, $3, now() + make_interval(secs => $4))
                RETURNING {_COLUMNS}""",  # noqa: S608 - constant column list
            prefix, digest, created_by, ttl_seconds,
        )
    return dict(row)


async def list_all(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Every code, newest first; never the digest."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM enrollments ORDER BY created_at DESC, id DESC"  # noqa: S608
    )
    return [dict(r) for r in rows]


async def delete_unused(pool: asyncpg.Pool, enrollment_id: int) -> dict[str, Any] | None:
    """Delete a code that was not consumed; None if there is no such unused code."""
    row = await pool.fetchrow(
        f"""DELETE FROM enrollments WHERE id = $1 AND consumed_at IS NULL
            RETURNING {_COLUMNS}""",  # noqa: S608 - constant column list
        enrollment_id,
    )
    return None if row is None else dict(row)


async def register(
    pool: asyncpg.Pool, *, code_digest: bytes, name: str, host: dict[str, Any],
    token_digest: bytes,
) -> tuple[int, int] | None:
    """Consume the code and create the server with its run token's digest, in one
    transaction. Returns ``(server_id, enrollment_id)``, or None when the code is
    unknown, used or expired (the caller does not learn which: nor does a guesser)."""
    async with pool.acquire() as conn, conn.transaction():
        enrollment_id = await conn.fetchval(
            """UPDATE enrollments SET consumed_at = now()
                WHERE code_digest = $1 AND consumed_at IS NULL AND expires_at > now()
            RETURNING id""",
            code_digest,
        )
        if enrollment_id is None:
            return None
        server_id = await conn.fetchval(
            """INSERT INTO servers (name, hostname, host, token_digest)
               VALUES ($1, $2, $3, $4) RETURNING id""",
            name, host.get("hostname"), host, token_digest,
        )
        await conn.execute(
            "UPDATE enrollments SET server_id = $2 WHERE id = $1", enrollment_id, server_id
        )
    return server_id, enrollment_id


async def purge(pool: asyncpg.Pool, *, keep_days: int = 30) -> int:
    """Delete codes consumed or expired more than ``keep_days`` ago; return how many.
    Until then they stay listed, so that an operator can see what enrolled which server."""
    done = await pool.execute(
        """DELETE FROM enrollments
            WHERE coalesce(consumed_at, expires_at) < now() - make_interval(days => $1)""",
        keep_days,
    )
    return int(done.split()[-1])
