"""Servers as the REST API shows and edits them: plain SQL for the read side of the
servers table with its group and tags, and for what an admin may change (name,
group, tags, notes, traffic reset day) or delete.

The agent link's own queries (tokens, hello, last seen) are in ``db/servers.py``.
Nothing here selects ``token_digest``: a listing cannot leak what it does not read.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg

from beeyard.server.db import history, tags

Db: TypeAlias = "asyncpg.Pool | asyncpg.Connection"

_COLUMNS = """s.id, s.name, s.hostname, s.host, s.capabilities, s.agent_version, s.protocol,
    s.sample_interval, s.created_at, s.updated_at, s.connected_at, s.last_seen_at,
    s.notes, s.traffic_reset_day, s.group_id, g.name AS group_name"""

EDITABLE = ("name", "group_id", "notes", "traffic_reset_day")


class UnknownGroup(Exception):
    """The group id given does not exist."""


async def list_all(db: Db) -> list[dict[str, Any]]:
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM servers s LEFT JOIN server_groups g ON g.id = s.group_id
            ORDER BY lower(s.name), s.id"""  # noqa: S608
    )
    by_server = await tags.for_servers(db)
    return [_shape(r, by_server.get(r["id"], [])) for r in rows]


async def get(db: Db, server_id: int) -> dict[str, Any] | None:
    row = await db.fetchrow(
        f"""SELECT {_COLUMNS} FROM servers s LEFT JOIN server_groups g ON g.id = s.group_id
            WHERE s.id = $1""",  # noqa: S608
        server_id,
    )
    if row is None:
        return None
    return _shape(row, (await tags.for_servers(db, [server_id])).get(server_id, []))


async def names(db: Db) -> list[dict[str, Any]]:
    """``id`` and ``name`` of every server (Prometheus labels)."""
    return [dict(r) for r in await db.fetch("SELECT id, name FROM servers ORDER BY id")]


async def traffic_reset_day(db: Db, server_id: int) -> int | None:
    value: int | None = await db.fetchval(
        "SELECT traffic_reset_day FROM servers WHERE id = $1", server_id
    )
    return value


async def created_at(db: Db, server_id: int) -> Any:
    return await db.fetchval("SELECT created_at FROM servers WHERE id = $1", server_id)


def _shape(row: asyncpg.Record, tag_list: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(row)
    group_name = out.pop("group_name")
    group_id = out.pop("group_id")
    out["group"] = None if group_id is None else {"id": group_id, "name": group_name}
    out["tags"] = tag_list
    return out


async def update(
    pool: asyncpg.Pool, server_id: int, changes: dict[str, Any], tag_ids: list[int] | None
) -> dict[str, Any] | None:
    """Apply ``changes`` (columns in ``EDITABLE``) and, unless None, make the server's tags
    exactly ``tag_ids``, in one transaction; the server afterwards, or None if there is none.
    Raises ``UnknownGroup`` or ``tags.UnknownTags``."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval("SELECT id FROM servers WHERE id = $1 FOR UPDATE", server_id)
        if found is None:
            return None
        if changes:
            sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(changes))
            try:
                await conn.execute(
                    f"UPDATE servers SET {sets}, updated_at = now() WHERE id = $1",  # noqa: S608
                    server_id, *changes.values(),
                )
            except asyncpg.ForeignKeyViolationError:
                raise UnknownGroup(changes.get("group_id")) from None
        if tag_ids is not None:
            await tags.set_for_server(conn, server_id, tag_ids)
        return await get(conn, server_id)


async def delete(pool: asyncpg.Pool, server_id: int) -> dict[str, Any] | None:
    """Delete the server, its tag links and every metric row; its former id and name."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "DELETE FROM servers WHERE id = $1 RETURNING id, name", server_id
        )
        if row is None:
            return None
        await history.delete_server(conn, server_id)
        return dict(row)
