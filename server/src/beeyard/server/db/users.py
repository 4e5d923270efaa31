"""Users: plain SQL for the users table."""

from __future__ import annotations

from typing import Any

import asyncpg

PUBLIC_COLUMNS = (
    "id, username, role, disabled, totp_enabled, created_at, updated_at, "
    "password_changed_at, last_login_at"
)


async def count(pool: asyncpg.Pool | asyncpg.Connection) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM users"))


async def create(
    pool: asyncpg.Pool | asyncpg.Connection, username: str, password_hash: str, role: str
) -> dict[str, Any]:
    row = await pool.fetchrow(
        f"""INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3)
            RETURNING {PUBLIC_COLUMNS}""",  # noqa: S608
        username, password_hash, role,
    )
    return dict(row)
