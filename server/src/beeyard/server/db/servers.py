"""Servers as the agent link sees them: plain SQL for the servers table.

The read side (names, groups, tags, listing) lives with the servers API; this
module holds what enrollment, the agent hub and token rotation need. The run
token is kept as its SHA-256 digest and found by one indexed lookup, so 10,000
agents reconnecting cost 10,000 index probes, not 10,000 slow hashes.
"""

from __future__ import annotations

from typing import Any

import asyncpg


async def by_token(pool: asyncpg.Pool, digest: bytes) -> asyncpg.Record | None:
    """The server a run token belongs to (``id``, ``name``), or None."""
    return await pool.fetchrow("SELECT id, name FROM servers WHERE token_digest = $1", digest)


async def token_is_current(pool: asyncpg.Pool, server_id: int, digest: bytes) -> bool:
    found = await pool.fetchval(
        "SELECT 1 FROM servers WHERE id = $1 AND token_digest = $2", server_id, digest
    )
    return found is not None


async def record_hello(
    pool: asyncpg.Pool, server_id: int, *, token_digest: bytes, host: dict[str, Any],
    capabilities: list[str], agent_version: str, protocol: str, interval: float,
) -> bool:
    """Store what the agent said about itself in ``hello``, and when it connected.

    Only while ``token_digest`` is still the server's token: False means the token
    was rotated (or the server deleted) after the link was authenticated."""
    done = await pool.execute(
        """UPDATE servers
              SET host = $3, hostname = $4, capabilities = $5, agent_version = $6,
                  protocol = $7, sample_interval = $8, connected_at = now(),
                  last_seen_at = now(), updated_at = now()
            WHERE id = $1 AND token_digest = $2""",
        server_id, token_digest, host, host.get("hostname"), capabilities, agent_version,
        protocol, interval,
    )
    return bool(done != "UPDATE 0")


async def set_capabilities(pool: asyncpg.Pool, server_id: int, capabilities: list[str]) -> None:
    """The capability set the agent reported after hello (a local grant changed)."""
    await pool.execute(
        "UPDATE servers SET capabilities = $2, updated_at = now() WHERE id = $1",
        server_id, capabilities,
    )


async def touch(pool: asyncpg.Pool, server_ids: list[int]) -> dict[int, bytes]:
    """Record that these servers' agents were heard from just now (batched by presence);
    returns each one's current token digest (a server deleted meanwhile is missing)."""
    if not server_ids:
        return {}
    rows = await pool.fetch(
        """UPDATE servers SET last_seen_at = now() WHERE id = ANY($1::bigint[])
        RETURNING id, token_digest""",
        server_ids,
    )
    return {r["id"]: bytes(r["token_digest"]) for r in rows}


async def set_token(pool: asyncpg.Pool, server_id: int, digest: bytes) -> bool:
    """Replace the run token's digest; the old token stops matching at once.
    False when there is no such server."""
    done = await pool.execute(
        """UPDATE servers SET token_digest = $2, token_rotated_at = now(), updated_at = now()
            WHERE id = $1""",
        server_id, digest,
    )
    return bool(done != "UPDATE 0")


async def exists(pool: asyncpg.Pool, server_id: int) -> bool:
    found = await pool.fetchval("SELECT 1 FROM servers WHERE id = $1", server_id)
    return found is not None


async def capabilities(pool: asyncpg.Pool, server_id: int) -> list[str] | None:
    """What the server's agent last said it allows; None if there is no such server."""
    row = await pool.fetchrow("SELECT capabilities FROM servers WHERE id = $1", server_id)
    return None if row is None else list(row["capabilities"] or [])
