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


async def for_login(pool: asyncpg.Pool, username: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        """SELECT id, username, role, disabled, password_hash, totp_enabled, totp_secret_enc,
                  totp_last_step
             FROM users WHERE lower(username) = lower($1)""",
        username,
    )


async def accept_totp_step(pool: asyncpg.Pool, user_id: int, step: int) -> bool:
    """Record ``step`` as used; False if it (or a later one) was used already, even by
    a concurrent sign-in, so each code works exactly once."""
    done = await pool.execute(
        """UPDATE users SET totp_last_step = $2
            WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)""",
        user_id, step,
    )
    return bool(done == "UPDATE 1")


async def use_recovery_code(pool: asyncpg.Pool, user_id: int, digest: bytes) -> bool:
    done = await pool.execute(
        """UPDATE recovery_codes SET used_at = now()
            WHERE user_id = $1 AND code_digest = $2 AND used_at IS NULL""",
        user_id, digest,
    )
    return bool(done == "UPDATE 1")


async def record_login(pool: asyncpg.Pool, user_id: int) -> None:
    await pool.execute("UPDATE users SET last_login_at = now() WHERE id = $1", user_id)
