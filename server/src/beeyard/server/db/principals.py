"""Resolving a presented credential to its user, in one indexed query each.

The user row is read on every request (never cached) so that disabling or
deleting a user, or changing a role, takes effect on their next request.
"""

from __future__ import annotations

import asyncpg

SESSION_SQL = """
SELECT s.id, s.csrf_token, s.last_seen_at < now() - interval '60 seconds' AS stale,
       u.id AS user_id, u.username, u.role
  FROM sessions s JOIN users u ON u.id = s.user_id
 WHERE s.token_digest = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
   AND NOT u.disabled
"""

API_KEY_SQL = """
SELECT k.id, k.scope,
       k.last_used_at IS NULL OR k.last_used_at < now() - interval '60 seconds' AS stale,
       u.id AS user_id, u.username, u.role
  FROM api_keys k JOIN users u ON u.id = k.user_id
 WHERE k.key_digest = $1 AND k.revoked_at IS NULL
   AND (k.expires_at IS NULL OR k.expires_at > now()) AND NOT u.disabled
"""

ACCESS_TOKEN_SQL = """
SELECT d.id, d.last_seen_at < now() - interval '60 seconds' AS stale,
       u.id AS user_id, u.username, u.role
  FROM mobile_tokens t
  JOIN mobile_devices d ON d.id = t.device_id
  JOIN users u ON u.id = d.user_id
 WHERE t.token_digest = $1 AND t.kind = 'access' AND t.expires_at > now()
   AND d.revoked_at IS NULL AND NOT u.disabled
"""  # noqa: S105 - SQL, not a secret


async def session(pool: asyncpg.Pool, digest: bytes) -> asyncpg.Record | None:
    return await pool.fetchrow(SESSION_SQL, digest)


async def api_key(pool: asyncpg.Pool, digest: bytes) -> asyncpg.Record | None:
    return await pool.fetchrow(API_KEY_SQL, digest)


async def access_token(pool: asyncpg.Pool, digest: bytes) -> asyncpg.Record | None:
    return await pool.fetchrow(ACCESS_TOKEN_SQL, digest)


async def touch(pool: asyncpg.Pool, kind: str, credential_id: int) -> None:
    """Record use at most once a minute per credential, not once per request."""
    table, column = {
        "session": ("sessions", "last_seen_at"),
        "api_key": ("api_keys", "last_used_at"),
        "device": ("mobile_devices", "last_seen_at"),
    }[kind]
    await pool.execute(f"UPDATE {table} SET {column} = now() WHERE id = $1", credential_id)  # noqa: S608
