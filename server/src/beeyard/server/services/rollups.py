"""Rollups and retention of the metric tiers, in the background.

Every run:

1. creates partitions ahead: metrics_minute a few days, metrics_hour this and
   next month, metrics_day this and next year, so no insert waits for DDL;
2. rolls complete hours up from metrics_minute into metrics_hour, and complete
   days from metrics_hour into metrics_day. Upserts, so running twice (or on two
   replicas) is harmless. Agents replay summaries up to a day late from their
   spools, so besides the new buckets each run re-rolls the last two hours, and
   once an hour a deep pass re-rolls the last ``LATE`` hours;
3. drops whole partitions past retention (``BEEYARD_METRICS_*_RETENTION_DAYS``),
   never one whose buckets are not yet rolled into the next tier.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from aiohttp import web

from beeyard.server import context
from beeyard.server.config import Settings
from beeyard.server.db import history as db
from beeyard.server.services import Background

log = logging.getLogger("beeyard.server.rollups")

INTERVAL = 300.0
LATE = dt.timedelta(hours=26)  # the agent spool's default bound (24 h) plus slack
RECENT = dt.timedelta(hours=2)
DEEP_EVERY = 3600.0
MINUTE_AHEAD_DAYS = 3
_HOUR_CHUNK = dt.timedelta(hours=24)  # bounds the size of one rollup statement
_DAY_CHUNK = dt.timedelta(days=31)


def _hour(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _day(t: dt.datetime) -> dt.datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def _next_month(t: dt.datetime) -> dt.datetime:
    return t.replace(year=t.year + t.month // 12, month=t.month % 12 + 1, day=1)


async def create_ahead(pool: db.Db, now: dt.datetime) -> None:
    today = _day(now)
    await db.ensure_partitions(pool, "metrics_minute", today,
                               today + dt.timedelta(days=MINUTE_AHEAD_DAYS + 1))
    month = today.replace(day=1)
    await db.ensure_partitions(pool, "metrics_hour", month, _next_month(_next_month(month)))
    year = month.replace(month=1)
    await db.ensure_partitions(pool, "metrics_day", year, year.replace(year=year.year + 2))


async def roll(pool: db.Db, now: dt.datetime, *, lookback: dt.timedelta = RECENT) -> None:
    """Roll every complete hour and day not yet rolled, and the last ``lookback`` again."""
    until = _hour(now)
    done = await db.done_until(pool, "hour")
    if done is None:
        earliest = await db.earliest_minute(pool)
        start = until if earliest is None else _hour(earliest)
    else:
        start = min(done, until - lookback)
    written = 0
    t = start
    while t < until:
        nxt = min(t + _HOUR_CHUNK, until)
        written += await db.roll_up(pool, "hour", t, nxt)
        t = nxt
    await db.set_done_until(pool, "hour", until)

    today = _day(now)
    t = _day(start)
    while t < today:
        nxt = min(t + _DAY_CHUNK, today)
        written += await db.roll_up(pool, "day", t, nxt)
        t = nxt
    await db.set_done_until(pool, "day", today)
    if written:
        log.debug("rolled up %d buckets from %s", written, start.isoformat())


async def expire(pool: db.Db, settings: Settings, now: dt.datetime) -> list[str]:
    """Drop the partitions wholly past retention; the names dropped."""
    hour_done = await db.done_until(pool, "hour")
    day_done = await db.done_until(pool, "day")
    limits = {
        "metrics_minute": (settings.metrics_minute_retention_days, hour_done),
        "metrics_hour": (settings.metrics_hour_retention_days, day_done),
        "metrics_day": (settings.metrics_day_retention_days, None),
    }
    dropped = []
    for table, (days, rolled) in limits.items():
        cutoff = now - dt.timedelta(days=days)
        for name, _start, end in await db.partitions(pool, table):
            if end > cutoff:
                break
            if table != "metrics_day" and (rolled is None or end > rolled):
                break  # not yet in the next tier: keep it until it is
            await db.drop_partition(pool, table, name)
            dropped.append(name)
    if dropped:
        log.info("retention dropped %s", ", ".join(dropped))
    return dropped


class _Deep:
    last = 0.0


async def run(app: web.Application) -> None:
    pool = app[context.POOL]
    now = dt.datetime.now(dt.UTC)
    await create_ahead(pool, now)
    deep = time.monotonic() - _Deep.last >= DEEP_EVERY
    await roll(pool, now, lookback=LATE if deep else RECENT)
    if deep:
        _Deep.last = time.monotonic()
    await expire(pool, app[context.SETTINGS], now)


rollups = Background("rollups", interval=INTERVAL, run=run)
