"""Purge credentials that can no longer be used, so lookups stay small."""

from __future__ import annotations

from aiohttp import web

from beeyard.server import context
from beeyard.server.services import Background


async def purge_expired(app: web.Application) -> None:
    pool = app[context.POOL]
    await pool.execute(
        "DELETE FROM sessions WHERE expires_at < now() - interval '1 day' "
        "OR revoked_at < now() - interval '1 day'"
    )
    await pool.execute("DELETE FROM mobile_tokens WHERE expires_at < now() - interval '1 day'")


housekeeping = Background("housekeeping", interval=600, run=purge_expired)
