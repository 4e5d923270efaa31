"""Firing scheduled tasks: every ``INTERVAL`` seconds, each task whose
``next_run_at`` has come is claimed and run.

The claim is one ``UPDATE tasks SET next_run_at = <next> WHERE id = ... AND
next_run_at = <the value read>``: with several replicas ticking at once exactly
one moves it on, and only that one starts the run. The next firing is computed
from *now*, not from the missed one, so a server that was down for hours fires a
task at most once when it comes back (and only if the firing it missed is less
than ``MISSED_GRACE`` old; older ones are skipped, with a log line), never a
burst of catch-up runs; and since the next firing is always in a later minute, a
task fires at most once a minute.
"""

from __future__ import annotations

import datetime as dt
import logging

from aiohttp import web

from beeyard.server import context
from beeyard.server.cron import CronError
from beeyard.server.cron import parse as parse_cron
from beeyard.server.db import tasks as tasks_db
from beeyard.server.services import Background, background
from beeyard.server.services.tasks import RUNNER, Starter, now, runner_ctx

log = logging.getLogger("beeyard.server.schedule")

INTERVAL = 10.0  # seconds between looks for due tasks (a firing is at most this late)
MISSED_GRACE = dt.timedelta(minutes=5)  # a firing missed by more is skipped, not run late
STALE = dt.timedelta(minutes=2)  # a running run's heartbeat older than this: its replica died
SCHEDULER = Starter(user_id=None, actor="scheduler", kind=None)


async def tick(app: web.Application, at: dt.datetime | None = None) -> list[int]:
    """Fire the tasks due at ``at`` (now by default); the ids of the runs started."""
    at = at or now()
    pool = app[context.POOL]
    started: list[int] = []
    for row in await tasks_db.due(pool, at):
        try:
            following = parse_cron(row["schedule"]).next_after(at)
        except (CronError, TypeError):
            following = None  # stored before a rule changed: stop firing it, say why
            log.warning("task %d: schedule %r no longer parses; not firing it",
                        row["id"], row["schedule"])
        if not await tasks_db.claim(pool, row["id"], row["next_run_at"], following):
            continue  # another replica fired it
        if at - row["next_run_at"] > MISSED_GRACE:
            log.warning("task %d: skipped its firing of %s, missed by more than %s",
                        row["id"], row["next_run_at"].isoformat(), MISSED_GRACE)
            continue
        task = await tasks_db.get(pool, row["id"])
        if task is None:
            continue
        servers = await tasks_db.targets(pool, task)
        if not servers:
            log.warning("task %d: scheduled, but its target has no servers", row["id"])
            continue
        started.append(await app[RUNNER].start(task, servers, trigger="schedule",
                                               starter=SCHEDULER))
    return started


async def keep_runs(app: web.Application) -> list[int]:
    """Beat for the runs this replica runs; cancel those whose replica went silent.
    The ids of the runs abandoned."""
    pool = app[context.POOL]
    runner = app[RUNNER]
    mine = [run_id for run_id, run in runner.runs.items() if not run.done.is_set()]
    if mine:
        await tasks_db.beat(pool, mine)
    abandoned = await tasks_db.abandon_stale(pool, STALE)
    if abandoned:
        log.warning("runs %s: their control plane stopped beating; marked cancelled",
                    ", ".join(map(str, abandoned)))
    return abandoned


async def _tick(app: web.Application) -> None:
    await keep_runs(app)
    await tick(app)


def install(app: web.Application) -> None:
    """The task runner and the scheduler; after the database and the agent hub (one
    job per app: its state is the app's)."""
    app.cleanup_ctx.append(runner_ctx)
    app.cleanup_ctx.append(background(Background("task-scheduler", interval=INTERVAL,
                                                 run=_tick)))
