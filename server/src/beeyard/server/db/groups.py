"""Server groups: plain SQL for the server_groups table.

A server belongs to at most one group (``servers.group_id``); deleting a group
leaves its servers ungrouped (``ON DELETE SET NULL``) rather than deleting them,
because a group is only a way of arranging the fleet. Names are unique without
regard to case, so "Web" and "web" cannot both exist and confuse a reader.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg

Db: TypeAlias = "asyncpg.Pool | asyncpg.Connection"

_COLUMNS = (
    "g.id, g.name, g.created_at, "
    "(SELECT count(*) FROM servers s WHERE s.group_id = g.id) AS server_count"
)


class NameTaken(Exception):
    """Another group already has that name."""


async def list_all(db: Db) -> list[dict[str, Any]]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM server_groups g ORDER BY lower(g.name), g.id")  # noqa: S608
    return [dict(r) for r in rows]


async def get(db: Db, group_id: int) -> dict[str, Any] | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM server_groups g WHERE g.id = $1", group_id)  # noqa: S608
    return None if row is None else dict(row)


async def create(db: Db, name: str) -> dict[str, Any]:
    try:
        group_id = await db.fetchval(
            "INSERT INTO server_groups (name) VALUES ($1) RETURNING id", name
        )
    except asyncpg.UniqueViolationError:
        raise NameTaken(name) from None
    row = await get(db, group_id)
    assert row is not None
    return row


async def rename(db: Db, group_id: int, name: str) -> dict[str, Any] | None:
    try:
        found = await db.fetchval(
            "UPDATE server_groups SET name = $2 WHERE id = $1 RETURNING id", group_id, name
        )
    except asyncpg.UniqueViolationError:
        raise NameTaken(name) from None
    return None if found is None else await get(db, group_id)


async def delete(db: Db, group_id: int) -> dict[str, Any] | None:
    """Delete the group (its servers become ungrouped); its former row, or None."""
    row = await db.fetchrow(
        "DELETE FROM server_groups WHERE id = $1 RETURNING id, name", group_id
    )
    return None if row is None else dict(row)
