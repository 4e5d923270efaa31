"""API keys: plain SQL for the api_keys table.

Only the SHA-256 digest of a key is stored, with its first 8 characters after
``beeyard_`` for recognising it in a list. Revoking a key stamps ``revoked_at``
instead of deleting the row, so that the audit trail's ``api_key:N`` targets
still name something an operator can look up (housekeeping deletes the row 90
days later). Nothing here ever selects the digest back out: a listing cannot
leak what it does not read.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

# The limit keeps a script that creates a key per run from growing the table without bound.
MAX_ACTIVE_PER_USER = 100

_COLUMNS = (
    "k.id, k.name, k.key_prefix AS prefix, k.scope, k.created_at, k.expires_at, "
    "k.last_used_at, (k.expires_at IS NOT NULL AND k.expires_at <= now()) AS expired"
)


class NameTaken(Exception):
    """The user already has an active key of that name."""


class TooMany(Exception):
    """The user has ``MAX_ACTIVE_PER_USER`` active keys already."""


class NoSuchUser(Exception):
    """The owner was deleted between the request's authentication and this insert."""


async def create(
    pool: asyncpg.Pool,
    *,
    user_id: int,
    name: str,
    prefix: str,
    digest: bytes,
    scope: str,
    expires_at: dt.datetime | None,
) -> dict[str, Any]:
    """Insert a key; raise ``NameTaken``, ``TooMany`` or ``NoSuchUser`` instead.

    The owner's row is locked for the length of the transaction so that two
    concurrent creations by the same user cannot both pass the name check.
    ``FOR NO KEY UPDATE`` does not block other inserts that merely reference
    the user (sessions, devices).
    """
    async with pool.acquire() as conn, conn.transaction():
        owner = await conn.fetchval("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE", user_id)
        if owner is None:
            raise NoSuchUser(user_id)
        active = await conn.fetchrow(
            """SELECT count(*) AS n, bool_or(lower(name) = lower($2)) AS taken
                 FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL""",
            user_id, name,
        )
        if active["taken"]:
            raise NameTaken(name)
        if active["n"] >= MAX_ACTIVE_PER_USER:
            raise TooMany()
        row = await conn.fetchrow(
            f"""INSERT INTO api_keys AS k (user_id, name, key_prefix, key_digest, scope, expires_at)
                VALUES ($1, $2, $3, $4, $5, $6)
                RETURNING {_COLUMNS}""",  # noqa: S608 - constant column list
            user_id, name, prefix, digest, scope, expires_at,
        )
    return dict(row)


async def list_for(pool: asyncpg.Pool, user_id: int | None) -> list[dict[str, Any]]:
    """Active (not revoked) keys of one user, or of everyone when ``user_id`` is None.

    Expired keys stay listed, marked ``expired``, until their owner deletes them,
    so that a script that stopped working shows why.
    """
    rows = await pool.fetch(
        f"""SELECT {_COLUMNS}, u.id AS user_id, u.username
              FROM api_keys k JOIN users u ON u.id = k.user_id
             WHERE k.revoked_at IS NULL AND ($1::bigint IS NULL OR k.user_id = $1)
             ORDER BY k.created_at DESC, k.id DESC""",  # noqa: S608 - constant column list
        user_id,
    )
    return [dict(r) for r in rows]


async def revoke(pool: asyncpg.Pool, key_id: int, owner_id: int | None) -> dict[str, Any] | None:
    """Revoke an active key, only if ``owner_id`` owns it (None: any owner, for admins).

    Returns the key as it was, or None when there is no such active key for
    this caller, which the API answers with 404 either way.
    """
    row = await pool.fetchrow(
        """UPDATE api_keys k SET revoked_at = now()
             FROM users u
            WHERE k.id = $1 AND u.id = k.user_id AND k.revoked_at IS NULL
              AND ($2::bigint IS NULL OR k.user_id = $2)
        RETURNING k.id, k.name, k.key_prefix AS prefix, k.scope, k.revoked_at,
                  u.id AS user_id, u.username""",
        key_id, owner_id,
    )
    return None if row is None else dict(row)


async def purge_revoked(pool: asyncpg.Pool, *, keep_days: int = 90) -> int:
    """Delete keys revoked more than ``keep_days`` ago; return how many. Until then a
    revoked key stays listed so the audit trail's ``api_key:N`` targets name something."""
    done = await pool.execute(
        "DELETE FROM api_keys WHERE revoked_at < now() - make_interval(days => $1)", keep_days
    )
    return int(done.split()[-1])
