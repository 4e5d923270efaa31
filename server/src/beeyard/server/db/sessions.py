"""Browser sessions: plain SQL for the sessions table.

A session row holds only the SHA-256 digest of the cookie's random token, so a
copy of the database cannot be replayed as a cookie. Revocation sets
``revoked_at`` rather than deleting the row: the principal lookup refuses it at
once, and housekeeping purges it a day later.
"""

from __future__ import annotations

from typing import Any

import asyncpg

COLUMNS = "id, user_id, ip, user_agent, created_at, last_seen_at, expires_at"

# Usable right now: not revoked, not expired. The same test as the principal lookup.
ACTIVE = "revoked_at IS NULL AND expires_at > now()"


async def create(
    pool: asyncpg.Pool,
    *,
    user_id: int,
    token_digest: bytes,
    csrf_token: str,
    ip: str | None,
    user_agent: str | None,
    ttl_seconds: int,
) -> dict[str, Any]:
    row = await pool.fetchrow(
        f"""INSERT INTO sessions (user_id, token_digest, csrf_token, ip, user_agent, expires_at)
            VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
            RETURNING {COLUMNS}""",  # noqa: S608
        user_id, token_digest, csrf_token, ip, user_agent, float(ttl_seconds),
    )
    return dict(row)


async def get_active(pool: asyncpg.Pool, session_id: int) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        f"SELECT {COLUMNS} FROM sessions WHERE id = $1 AND {ACTIVE}",  # noqa: S608
        session_id,
    )
    return None if row is None else dict(row)


async def list_for_user(pool: asyncpg.Pool, user_id: int) -> list[dict[str, Any]]:
    """A person's own active sessions, most recently used first."""
    rows = await pool.fetch(
        f"""SELECT {COLUMNS} FROM sessions
             WHERE user_id = $1 AND {ACTIVE}
             ORDER BY last_seen_at DESC, id DESC""",  # noqa: S608
        user_id,
    )
    return [dict(r) for r in rows]


async def list_all(
    pool: asyncpg.Pool, *, user_id: int | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """Every user's active sessions (with the username), for administrators."""
    where = "s.revoked_at IS NULL AND s.expires_at > now()"
    args: list[Any] = []
    if user_id is not None:
        args.append(user_id)
        where += " AND s.user_id = $1"
    total = await pool.fetchval(f"SELECT count(*) FROM sessions s WHERE {where}", *args)  # noqa: S608
    rows = await pool.fetch(
        f"""SELECT s.id, s.user_id, u.username, s.ip, s.user_agent, s.created_at,
                   s.last_seen_at, s.expires_at
              FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE {where}
             ORDER BY s.last_seen_at DESC, s.id DESC
             LIMIT {int(limit)} OFFSET {int(offset)}""",  # noqa: S608
        *args,
    )
    return [dict(r) for r in rows], int(total)


async def revoke(
    pool: asyncpg.Pool, session_id: int, *, user_id: int | None = None
) -> dict[str, Any] | None:
    """Revoke one active session; with ``user_id``, only if it belongs to that user.

    None when there is no such active session, so that a caller cannot tell
    another user's session from one that does not exist.
    """
    row = await pool.fetchrow(
        f"""UPDATE sessions SET revoked_at = now()
             WHERE id = $1 AND ($2::bigint IS NULL OR user_id = $2) AND {ACTIVE}
            RETURNING {COLUMNS}""",  # noqa: S608
        session_id, user_id,
    )
    return None if row is None else dict(row)


async def revoke_for_user(
    pool: asyncpg.Pool | asyncpg.Connection, user_id: int, *, keep: int | None = None
) -> int:
    """Revoke every active session of a user except ``keep``; return how many."""
    done = await pool.execute(
        f"""UPDATE sessions SET revoked_at = now()
             WHERE user_id = $1 AND ($2::bigint IS NULL OR id <> $2) AND {ACTIVE}""",  # noqa: S608
        user_id, keep,
    )
    return int(done.split()[-1])


async def purge(pool: asyncpg.Pool) -> int:
    """Delete sessions expired or revoked more than a day ago (the day keeps a just
    revoked one visible to whoever looks into a sign-out); return how many."""
    done = await pool.execute(
        "DELETE FROM sessions WHERE expires_at < now() - interval '1 day' "
        "OR revoked_at < now() - interval '1 day'"
    )
    return int(done.split()[-1])
