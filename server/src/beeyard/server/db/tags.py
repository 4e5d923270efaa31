"""Server tags: plain SQL for server_tags and the server_tag_links between tags and servers.

Unlike groups, a server carries any number of tags. Tag names are unique without
regard to case. A server's tags are replaced as a whole (``set_for_server``), so
a PUT that names the tags it wants is idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias

import asyncpg

Db: TypeAlias = "asyncpg.Pool | asyncpg.Connection"

_COLUMNS = (
    "t.id, t.name, t.created_at, "
    "(SELECT count(*) FROM server_tag_links l WHERE l.tag_id = t.id) AS server_count"
)


class NameTaken(Exception):
    """Another tag already has that name."""


class UnknownTags(Exception):
    """Some of the tag ids given do not exist."""

    def __init__(self, ids: list[int]) -> None:
        super().__init__(ids)
        self.ids = ids


async def list_all(db: Db) -> list[dict[str, Any]]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM server_tags t ORDER BY lower(t.name), t.id")  # noqa: S608
    return [dict(r) for r in rows]


async def get(db: Db, tag_id: int) -> dict[str, Any] | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM server_tags t WHERE t.id = $1", tag_id)  # noqa: S608
    return None if row is None else dict(row)


async def create(db: Db, name: str) -> dict[str, Any]:
    try:
        tag_id = await db.fetchval("INSERT INTO server_tags (name) VALUES ($1) RETURNING id", name)
    except asyncpg.UniqueViolationError:
        raise NameTaken(name) from None
    row = await get(db, tag_id)
    assert row is not None
    return row


async def rename(db: Db, tag_id: int, name: str) -> dict[str, Any] | None:
    try:
        found = await db.fetchval(
            "UPDATE server_tags SET name = $2 WHERE id = $1 RETURNING id", tag_id, name
        )
    except asyncpg.UniqueViolationError:
        raise NameTaken(name) from None
    return None if found is None else await get(db, tag_id)


async def delete(db: Db, tag_id: int) -> dict[str, Any] | None:
    """Delete the tag and its links; its former row, or None."""
    row = await db.fetchrow("DELETE FROM server_tags WHERE id = $1 RETURNING id, name", tag_id)
    return None if row is None else dict(row)


async def set_for_server(conn: asyncpg.Connection, server_id: int, tag_ids: Iterable[int]) -> None:
    """Make the server's tags exactly ``tag_ids``; raise ``UnknownTags`` for ids that do not
    exist. Run inside the caller's transaction, with the server's row already locked."""
    wanted = sorted(set(tag_ids))
    if wanted:
        found = {r["id"] for r in await conn.fetch(
            "SELECT id FROM server_tags WHERE id = ANY($1::bigint[]) FOR KEY SHARE", wanted)}
        missing = [t for t in wanted if t not in found]
        if missing:
            raise UnknownTags(missing)
    await conn.execute(
        "DELETE FROM server_tag_links WHERE server_id = $1 AND NOT (tag_id = ANY($2::bigint[]))",
        server_id, wanted,
    )
    await conn.execute(
        """INSERT INTO server_tag_links (server_id, tag_id)
           SELECT $1, unnest($2::bigint[]) ON CONFLICT DO NOTHING""",
        server_id, wanted,
    )


async def for_servers(
    db: Db, server_ids: list[int] | None = None
) -> dict[int, list[dict[str, Any]]]:
    """server id → its tags ({id, name}), for every server (None) or the ones given."""
    rows = await db.fetch(
        """SELECT l.server_id, t.id, t.name FROM server_tag_links l
           JOIN server_tags t ON t.id = l.tag_id
           WHERE $1::bigint[] IS NULL OR l.server_id = ANY($1::bigint[])
           ORDER BY lower(t.name), t.id""",
        server_ids,
    )
    out: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["server_id"], []).append({"id": r["id"], "name": r["name"]})
    return out
