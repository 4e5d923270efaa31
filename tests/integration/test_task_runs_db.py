"""A run's end in the database: parts that never recorded an end of their own are
cancelled with the run, never left queued."""

from __future__ import annotations

import asyncpg

from beeyard.server.db import tasks as tasks_db


async def test_finishing_a_run_cancels_the_parts_left_queued_or_running(
    db: asyncpg.Connection,
) -> None:
    task_id = await db.fetchval(
        """INSERT INTO tasks (name, argv, timeout, max_output)
           VALUES ('t', '{/bin/true}', 10, 1024) RETURNING id""")
    run_id = await tasks_db.create_run(db, task_id, trigger="manual", triggered_by=None,
                                       retry_of=None, command={"argv": ["/bin/true"]},
                                       servers=[(1, "a"), (2, "b"), (3, "c")])
    await db.execute("UPDATE task_results SET state = 'succeeded', exit_code = 0 "
                     "WHERE run_id = $1 AND server_id = 1", run_id)
    await db.execute("UPDATE task_results SET state = 'running' "
                     "WHERE run_id = $1 AND server_id = 2", run_id)
    await tasks_db.finish_run(db, run_id, "cancelled")
    rows = {r["server_id"]: (r["state"], r["reason"], r["finished_at"] is not None)
            for r in await db.fetch("SELECT * FROM task_results WHERE run_id = $1", run_id)}
    assert rows[1] == ("succeeded", None, False)  # its own end stands
    for server_id in (2, 3):
        state, reason, finished = rows[server_id]
        assert state == "cancelled" and finished and "run ended" in reason
    assert await db.fetchval("SELECT state FROM task_runs WHERE id = $1", run_id) == "cancelled"
