"""Users: plain SQL for the users table and what hangs off a user (recovery codes,
and the revocation of every credential a user holds).

Reads for the API select ``PUBLIC_COLUMNS`` only, so a password hash or a TOTP
secret cannot leak into a response by a careless ``SELECT *``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias

import asyncpg

from beeyard.server.db import sessions

PUBLIC_COLUMNS = (
    "id, username, role, disabled, totp_enabled, created_at, updated_at, "
    "password_changed_at, last_login_at"
)

_LOGIN_COLUMNS = (
    "id, username, role, disabled, password_hash, totp_enabled, totp_secret_enc, totp_last_step"
)

# Taken (per transaction) by every change that could remove an administrator, so
# two concurrent demotions cannot both see "another admin remains" and leave none.
_ADMIN_SET_LOCK = 0x62656561  # "beea"

Db: TypeAlias = "asyncpg.Pool | asyncpg.Connection"


async def count(pool: Db) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM users"))


async def create(pool: Db, username: str, password_hash: str, role: str) -> dict[str, Any]:
    """Raises ``asyncpg.UniqueViolationError`` when the name is taken (case-insensitively)."""
    row = await pool.fetchrow(
        f"""INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3)
            RETURNING {PUBLIC_COLUMNS}""",  # noqa: S608
        username, password_hash, role,
    )
    return dict(row)


async def get(pool: Db, user_id: int) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        f"SELECT {PUBLIC_COLUMNS} FROM users WHERE id = $1", user_id  # noqa: S608
    )
    return None if row is None else dict(row)


async def list_all(pool: Db) -> list[dict[str, Any]]:
    rows = await pool.fetch(f"SELECT {PUBLIC_COLUMNS} FROM users ORDER BY id")  # noqa: S608
    return [dict(r) for r in rows]


async def for_login(pool: Db, username: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        f"SELECT {_LOGIN_COLUMNS} FROM users WHERE lower(username) = lower($1)",  # noqa: S608
        username,
    )


async def credentials(pool: Db, user_id: int) -> asyncpg.Record | None:
    """The same row as ``for_login``, by id: for re-authenticating a signed-in person."""
    return await pool.fetchrow(
        f"SELECT {_LOGIN_COLUMNS} FROM users WHERE id = $1", user_id  # noqa: S608
    )


async def update(conn: Db, user_id: int, changes: dict[str, Any]) -> dict[str, Any] | None:
    """Set the given columns (role, disabled, password_hash); None if no such user.

    A new password hash also moves ``password_changed_at``.
    """
    allowed = {"role", "disabled", "password_hash"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    sets = ["updated_at = now()"]
    args: list[Any] = [user_id]
    for column, value in changes.items():
        args.append(value)
        sets.append(f"{column} = ${len(args)}")
    if "password_hash" in changes:
        sets.append("password_changed_at = now()")
    row = await conn.fetchrow(
        f"UPDATE users SET {', '.join(sets)} WHERE id = $1 RETURNING {PUBLIC_COLUMNS}",  # noqa: S608
        *args,
    )
    return None if row is None else dict(row)


async def delete(conn: Db, user_id: int) -> dict[str, Any] | None:
    """Delete a user; sessions, keys, devices and recovery codes go with it (ON DELETE CASCADE)."""
    row = await conn.fetchrow(
        f"DELETE FROM users WHERE id = $1 RETURNING {PUBLIC_COLUMNS}", user_id  # noqa: S608
    )
    return None if row is None else dict(row)


async def lock_admin_set(conn: asyncpg.Connection) -> None:
    """Serialise changes that may remove an admin until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _ADMIN_SET_LOCK)


async def active_admins(conn: Db) -> int:
    """Admins who can sign in; a disabled admin cannot rescue anybody."""
    return int(await conn.fetchval(
        "SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled"
    ))


async def revoke_credentials(
    conn: Db, user_id: int, *, keep_session: int | None = None, keep_device: int | None = None
) -> dict[str, int]:
    """Revoke every browser session, mobile device (and with it its tokens) and API key
    of a user, except the one credential the caller is using. Returns counts per kind."""

    def n(tag: str) -> int:
        return int(tag.split()[-1])

    revoked_sessions = await sessions.revoke_for_user(conn, user_id, keep=keep_session)
    devices = await conn.execute(
        """UPDATE mobile_devices SET revoked_at = now()
            WHERE user_id = $1 AND ($2::bigint IS NULL OR id <> $2) AND revoked_at IS NULL""",
        user_id, keep_device,
    )
    keys = await conn.execute(
        """UPDATE api_keys SET revoked_at = now()
            WHERE user_id = $1 AND revoked_at IS NULL
              AND (expires_at IS NULL OR expires_at > now())""",
        user_id,
    )
    return {"sessions": revoked_sessions, "mobile_devices": n(devices), "api_keys": n(keys)}


# -- sign-in ---------------------------------------------------------------------


async def accept_totp_step(pool: Db, user_id: int, step: int) -> bool:
    """Record ``step`` as used; False if it (or a later one) was used already, even by
    a concurrent sign-in, so each code works exactly once."""
    done = await pool.execute(
        """UPDATE users SET totp_last_step = $2
            WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)""",
        user_id, step,
    )
    return bool(done == "UPDATE 1")


async def use_recovery_code(pool: Db, user_id: int, digest: bytes) -> bool:
    done = await pool.execute(
        """UPDATE recovery_codes SET used_at = now()
            WHERE user_id = $1 AND code_digest = $2 AND used_at IS NULL""",
        user_id, digest,
    )
    return bool(done == "UPDATE 1")


async def record_login(pool: Db, user_id: int) -> None:
    await pool.execute("UPDATE users SET last_login_at = now() WHERE id = $1", user_id)


# -- two-factor authentication ---------------------------------------------------


async def totp_state(pool: Db, user_id: int) -> dict[str, Any] | None:
    """Whether 2FA is on, whether a set-up awaits confirmation, and unused recovery codes."""
    row = await pool.fetchrow(
        """SELECT u.totp_enabled AS enabled,
                  u.totp_secret_enc IS NOT NULL AND NOT u.totp_enabled AS pending,
                  u.totp_secret_enc AS secret_enc,
                  (SELECT count(*) FROM recovery_codes r
                    WHERE r.user_id = u.id AND r.used_at IS NULL) AS recovery_codes_remaining
             FROM users u WHERE u.id = $1""",
        user_id,
    )
    return None if row is None else dict(row)


async def begin_totp(pool: Db, user_id: int, secret_enc: bytes) -> bool:
    """Store a new, not yet enabled secret; False if 2FA is already on."""
    done = await pool.execute(
        """UPDATE users SET totp_secret_enc = $2, totp_last_step = NULL, updated_at = now()
            WHERE id = $1 AND NOT totp_enabled""",
        user_id, secret_enc,
    )
    return bool(done == "UPDATE 1")


async def enable_totp(
    conn: asyncpg.Connection, user_id: int, secret_enc: bytes, step: int, digests: Iterable[bytes]
) -> bool:
    """Turn 2FA on for the secret that was confirmed (not one a concurrent set-up wrote
    since), mark the confirming step used, and store fresh recovery codes."""
    async with conn.transaction():
        done = await conn.execute(
            """UPDATE users SET totp_enabled = true, totp_last_step = $3, updated_at = now()
                WHERE id = $1 AND NOT totp_enabled AND totp_secret_enc = $2""",
            user_id, secret_enc, step,
        )
        if done != "UPDATE 1":
            return False
        await replace_recovery_codes(conn, user_id, digests)
        return True


async def disable_totp(conn: asyncpg.Connection, user_id: int) -> bool:
    """Turn 2FA off and forget the secret and recovery codes; False if it was off."""
    async with conn.transaction():
        done = await conn.execute(
            """UPDATE users SET totp_enabled = false, totp_secret_enc = NULL,
                                totp_last_step = NULL, updated_at = now()
                WHERE id = $1 AND (totp_enabled OR totp_secret_enc IS NOT NULL)""",
            user_id,
        )
        await conn.execute("DELETE FROM recovery_codes WHERE user_id = $1", user_id)
        return bool(done == "UPDATE 1")


async def replace_recovery_codes(
    conn: asyncpg.Connection, user_id: int, digests: Iterable[bytes]
) -> None:
    """Invalidate every old code and store the new ones (call inside a transaction)."""
    await conn.execute("DELETE FROM recovery_codes WHERE user_id = $1", user_id)
    await conn.executemany(
        "INSERT INTO recovery_codes (user_id, code_digest) VALUES ($1, $2)",
        [(user_id, d) for d in digests],
    )
