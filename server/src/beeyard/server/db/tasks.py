"""Tasks, their runs and each run's per-server results: plain SQL for tasks,
task_runs and task_results (migration 0005).

A task row is what to run and where; a run freezes the command it ran
(``task_runs.command``) so that editing a task never rewrites history; results
are one row per target server, updated as the run goes (services/tasks.py).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, TypeAlias

import asyncpg

Db: TypeAlias = "asyncpg.Pool | asyncpg.Connection"

TASK_FIELDS = ("name", "argv", "shell", "server_ids", "group_id", "tag_id", "timeout",
               "max_output", "cwd", "env", "schedule", "enabled")

_TASK = """
    t.id, t.name, t.argv, t.shell, t.server_ids, t.group_id, t.tag_id, t.timeout,
    t.max_output, t.cwd, t.env, t.schedule, t.next_run_at, t.enabled, t.created_by,
    t.created_at, t.updated_at,
    (SELECT jsonb_build_object('id', r.id, 'state', r.state, 'trigger', r.trigger,
                               'started_at', r.started_at, 'finished_at', r.finished_at)
       FROM task_runs r WHERE r.task_id = t.id ORDER BY r.id DESC LIMIT 1) AS last_run
"""

_RESULT = """
    x.server_id, x.server_name, x.state, x.reason, x.exit_code, x.signal,
    x.output_bytes, x.truncated, x.started_at, x.finished_at, x.duration
"""

FINISHED = ("succeeded", "failed", "timed_out", "cancelled", "denied", "offline")


def _task(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    out["env"] = json.loads(out["env"]) if isinstance(out["env"], str) else out["env"]
    if isinstance(out["last_run"], str):
        out["last_run"] = json.loads(out["last_run"])
    out["server_ids"] = list(out["server_ids"])
    return out


async def list_all(db: Db) -> list[dict[str, Any]]:
    rows = await db.fetch(f"SELECT {_TASK} FROM tasks t ORDER BY lower(t.name), t.id")  # noqa: S608
    return [_task(r) for r in rows]


async def get(db: Db, task_id: int) -> dict[str, Any] | None:
    row = await db.fetchrow(f"SELECT {_TASK} FROM tasks t WHERE t.id = $1", task_id)  # noqa: S608
    return None if row is None else _task(row)


async def create(db: Db, task: dict[str, Any], next_run_at: dt.datetime | None,
                 created_by: int | None) -> dict[str, Any]:
    task_id = await db.fetchval(
        """INSERT INTO tasks (name, argv, shell, server_ids, group_id, tag_id, timeout,
                              max_output, cwd, env, schedule, enabled, next_run_at, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14)
           RETURNING id""",
        *(_encode(task, f) for f in TASK_FIELDS), next_run_at, created_by)
    row = await get(db, task_id)
    assert row is not None
    return row


async def update(db: Db, task_id: int, task: dict[str, Any],
                 next_run_at: dt.datetime | None) -> dict[str, Any] | None:
    found = await db.fetchval(
        """UPDATE tasks SET name = $2, argv = $3, shell = $4, server_ids = $5, group_id = $6,
                            tag_id = $7, timeout = $8, max_output = $9, cwd = $10,
                            env = $11::jsonb, schedule = $12, enabled = $13,
                            next_run_at = $14, updated_at = now()
            WHERE id = $1 RETURNING id""",
        task_id, *(_encode(task, f) for f in TASK_FIELDS), next_run_at)
    return None if found is None else await get(db, task_id)


def _encode(task: dict[str, Any], name: str) -> Any:
    value = task.get(name)
    if name == "env":
        return json.dumps(value or {})
    if name == "server_ids":
        return list(value or [])
    return value


async def delete(db: Db, task_id: int) -> dict[str, Any] | None:
    row = await db.fetchrow("DELETE FROM tasks WHERE id = $1 RETURNING id, name", task_id)
    return None if row is None else dict(row)


async def existing_servers(db: Db, server_ids: list[int]) -> set[int]:
    rows = await db.fetch("SELECT id FROM servers WHERE id = ANY($1::bigint[])", server_ids)
    return {r["id"] for r in rows}


async def targets(db: Db, task: dict[str, Any]) -> list[tuple[int, str]]:
    """The servers a task runs on now, (id, name) in id order."""
    if task.get("group_id") is not None:
        rows = await db.fetch("SELECT id, name FROM servers WHERE group_id = $1 ORDER BY id",
                              task["group_id"])
    elif task.get("tag_id") is not None:
        rows = await db.fetch(
            """SELECT s.id, s.name FROM servers s JOIN server_tag_links l ON l.server_id = s.id
                WHERE l.tag_id = $1 ORDER BY s.id""", task["tag_id"])
    else:
        rows = await db.fetch("SELECT id, name FROM servers WHERE id = ANY($1::bigint[]) "
                              "ORDER BY id", list(task.get("server_ids") or []))
    return [(r["id"], r["name"]) for r in rows]


async def server_names(db: Db, server_ids: list[int]) -> dict[int, str]:
    rows = await db.fetch("SELECT id, name FROM servers WHERE id = ANY($1::bigint[])",
                          server_ids)
    return {r["id"]: r["name"] for r in rows}


# -- runs ------------------------------------------------------------------------------


async def create_run(conn: asyncpg.Connection, task_id: int, *, trigger: str,
                     triggered_by: int | None, retry_of: int | None, command: dict[str, Any],
                     servers: list[tuple[int, str]]) -> int:
    """A run and its queued results, in one transaction."""
    async with conn.transaction():
        run_id: int = await conn.fetchval(
            """INSERT INTO task_runs (task_id, trigger, retry_of, triggered_by, command)
               VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id""",
            task_id, trigger, retry_of, triggered_by, json.dumps(command))
        await conn.executemany(
            "INSERT INTO task_results (run_id, server_id, server_name) VALUES ($1, $2, $3)",
            [(run_id, sid, name) for sid, name in servers])
    return run_id


async def set_result(db: Db, run_id: int, server_id: int, **fields: Any) -> None:
    """Update some columns of one result (``state``, ``reason``, ``exit_code``, ...)."""
    allowed = {"state", "reason", "exit_code", "signal", "output_bytes", "truncated",
               "started_at", "finished_at", "duration"}
    names = [n for n in fields if n in allowed]
    assert len(names) == len(fields), f"unknown result fields: {set(fields) - allowed}"
    sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, start=3))
    await db.execute(f"UPDATE task_results SET {sets} WHERE run_id = $1 AND server_id = $2",  # noqa: S608
                     run_id, server_id, *(fields[n] for n in names))


async def append_output(db: Db, run_id: int, server_id: int, data: bytes, total: int,
                        truncated: bool) -> None:
    await db.execute(
        """UPDATE task_results SET output = output || $3, output_bytes = $4, truncated = $5
            WHERE run_id = $1 AND server_id = $2""",
        run_id, server_id, data, total, truncated)


async def finish_run(db: Db, run_id: int, state: str) -> None:
    """The run is over; a server part that never got to record an end of its own (the
    run was cancelled, or the server stopped, before that part started) is cancelled
    with it rather than left ``queued`` for ever."""
    await db.execute(
        """WITH parts AS (
               UPDATE task_results SET state = 'cancelled', finished_at = now(),
                      reason = coalesce(reason, 'the run ended before this server''s part did')
                WHERE run_id = $1 AND state IN ('queued', 'running'))
           UPDATE task_runs SET state = $2, finished_at = now()
            WHERE id = $1 AND state = 'running'""",
        run_id, state)


async def get_run(db: Db, task_id: int, run_id: int, *,
                  output: bool = False) -> dict[str, Any] | None:
    row = await db.fetchrow(
        """SELECT id, task_id, trigger, retry_of, triggered_by, state, command, started_at,
                  finished_at FROM task_runs WHERE id = $1 AND task_id = $2""", run_id, task_id)
    if row is None:
        return None
    run = _run(row)
    run["results"] = await results(db, [run_id], output=output)
    return run


def _run(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    if isinstance(out["command"], str):
        out["command"] = json.loads(out["command"])
    return out


async def results(db: Db, run_ids: list[int], *, output: bool) -> list[dict[str, Any]]:
    extra = ", x.output, x.run_id" if output else ", x.run_id"
    rows = await db.fetch(
        f"SELECT {_RESULT}{extra} FROM task_results x WHERE x.run_id = ANY($1::bigint[]) "  # noqa: S608
        "ORDER BY x.run_id, x.server_id", run_ids)
    return [dict(r) for r in rows]


async def list_runs(db: Db, task_id: int, *, limit: int, offset: int,
                    output: bool) -> tuple[list[dict[str, Any]], int]:
    """Runs newest first, each with its results; and how many there are in all."""
    total: int = await db.fetchval("SELECT count(*) FROM task_runs WHERE task_id = $1", task_id)
    rows = await db.fetch(
        """SELECT id, task_id, trigger, retry_of, triggered_by, state, command, started_at,
                  finished_at FROM task_runs WHERE task_id = $1
            ORDER BY id DESC LIMIT $2 OFFSET $3""", task_id, limit, offset)
    runs = [_run(r) for r in rows]
    by_run: dict[int, list[dict[str, Any]]] = {r["id"]: [] for r in runs}
    for result in await results(db, list(by_run), output=output):
        by_run[result.pop("run_id")].append(result)
    for run in runs:
        run["results"] = by_run[run["id"]]
    return runs, total


async def output_of(db: Db, task_id: int, run_id: int,
                    server_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(
        """SELECT x.output, x.state, x.truncated FROM task_results x
             JOIN task_runs r ON r.id = x.run_id
            WHERE r.task_id = $1 AND x.run_id = $2 AND x.server_id = $3""",
        task_id, run_id, server_id)


async def beat(db: Db, run_ids: list[int]) -> None:
    """The runs this replica is running are still alive."""
    await db.execute("UPDATE task_runs SET heartbeat_at = now() "
                     "WHERE id = ANY($1::bigint[]) AND state = 'running'", run_ids)


async def abandon_stale(pool: asyncpg.Pool, silent_for: dt.timedelta) -> list[int]:
    """Runs still 'running' whose replica stopped beating ``silent_for`` ago (it died):
    mark them and their unfinished results cancelled, so none stays running forever."""
    async with pool.acquire() as conn, conn.transaction():
        ids = [r["id"] for r in await conn.fetch(
            """UPDATE task_runs SET state = 'cancelled', finished_at = now()
                WHERE state = 'running' AND heartbeat_at < now() - $1::interval
            RETURNING id""", silent_for)]
        if ids:
            await conn.execute(
                """UPDATE task_results SET state = 'cancelled', finished_at = now(),
                          reason = 'the control plane running it stopped before it finished'
                    WHERE run_id = ANY($1::bigint[]) AND state IN ('queued', 'running')""",
                ids)
    return ids


# -- the schedule ----------------------------------------------------------------------


async def due(db: Db, now: dt.datetime) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        """SELECT id, schedule, next_run_at FROM tasks
            WHERE next_run_at IS NOT NULL AND next_run_at <= $1 AND enabled
            ORDER BY next_run_at, id""", now)
    return rows


async def claim(db: Db, task_id: int, seen: dt.datetime, following: dt.datetime | None) -> bool:
    """Move a due task's next_run_at on, if no one else did since we read ``seen``:
    True means this caller fires it (and no other replica will for that minute)."""
    found = await db.fetchval(
        "UPDATE tasks SET next_run_at = $3 WHERE id = $1 AND next_run_at = $2 RETURNING id",
        task_id, seen, following)
    return found is not None
