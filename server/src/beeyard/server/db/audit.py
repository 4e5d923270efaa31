"""The audit trail: append-only writes and filtered, paginated reads."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg


async def record(
    pool: asyncpg.Pool,
    *,
    action: str,
    outcome: str,
    actor_user_id: int | None = None,
    actor: str | None = None,
    principal_kind: str | None = None,
    target: str | None = None,
    ip: str | None = None,
    status: int | None = None,
    request_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await pool.execute(
        """INSERT INTO audit_logs (actor_user_id, actor, principal_kind, action, target, ip,
                                   outcome, status, request_id, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        actor_user_id, actor, principal_kind, action, target, ip, outcome, status,
        request_id, detail or {},
    )


def _like_literal(text: str) -> str:
    """``text`` as a LIKE pattern matching only itself. The backslash is LIKE's escape
    character, so it is doubled first; otherwise ``x\\`` would escape our ``%``."""
    return text.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")


async def search(
    pool: asyncpg.Pool,
    *,
    actor: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    target: str | None = None,
    ip: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Newest first. ``action`` matches a prefix (``users.`` finds every user change)."""
    where, args = [], []

    def add(sql: str, value: Any) -> None:
        args.append(value)
        where.append(sql.replace("?", f"${len(args)}"))

    if actor is not None:
        add("lower(actor) = lower(?)", actor)
    if action is not None:
        add("action LIKE ? || '%'", _like_literal(action))
    if outcome is not None:
        add("outcome = ?", outcome)
    if target is not None:
        add("target = ?", target)
    if ip is not None:
        add("ip = ?", ip)
    if since is not None:
        add("at >= ?", since)
    if until is not None:
        add("at < ?", until)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    total = await pool.fetchval(f"SELECT count(*) FROM audit_logs {clause}", *args)  # noqa: S608
    rows = await pool.fetch(
        f"""SELECT id, at, actor_user_id, actor, principal_kind, action, target, ip, outcome,
                   status, request_id, detail
              FROM audit_logs {clause}
             ORDER BY at DESC, id DESC
             LIMIT {int(limit)} OFFSET {int(offset)}""",  # noqa: S608
        *args,
    )
    return [dict(r) for r in rows], int(total)


_PURGE_BATCH = 10_000


async def purge_older_than(pool: asyncpg.Pool, days: int) -> int:
    """Delete records older than ``days``; return how many. In batches, so that the
    first purge of a large, long-kept log neither holds one huge transaction nor
    blocks the writers of new records for long."""
    total = 0
    while True:
        done = await pool.execute(
            """DELETE FROM audit_logs WHERE id IN (
                   SELECT id FROM audit_logs WHERE at < now() - make_interval(days => $1)
                    LIMIT $2)""",
            days, _PURGE_BATCH,
        )
        deleted = int(done.split()[-1])
        total += deleted
        if deleted < _PURGE_BATCH:
            return total
