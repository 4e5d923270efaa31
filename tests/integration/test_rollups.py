"""Rollups and retention against real partitions: weighted averages, idempotence, late
summaries, partitions created ahead and whole partitions dropped past retention."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import asyncpg
from tests.conftest import Api
from tests.fleetdata import add_minute, add_server, utc

from beeyard.server.config import Settings
from beeyard.server.db import history as db_history
from beeyard.server.services import rollups


async def _hour_rows(db: asyncpg.Connection, table: str = "metrics_hour") -> list[dict]:  # type: ignore[type-arg]
    rows = await db.fetch(
        f"""SELECT server_id, bucket, samples, minutes, net_rx_bytes, net_tx_bytes,
                   cpu_avg, cpu_min, cpu_max, memory_used_avg, gpu_utilization_avg
            FROM {table} ORDER BY server_id, bucket"""  # noqa: S608
    )
    return [dict(r) for r in rows]


async def test_hour_and_day_rollups_are_exact_and_idempotent(db: asyncpg.Connection) -> None:
    a = await add_server(db, "a")
    b = await add_server(db, "b")
    h = utc(2026, 3, 1, 10)
    # server a, 10:00-10:59: 1 sample at cpu 100 then 59 at cpu 10; 11:00: one minute
    await add_minute(db, a, h, samples=1, values={"cpu": (100.0, 100.0, 100.0)}, rx=5, tx=1)
    await add_minute(db, a, h + dt.timedelta(minutes=30), samples=59,
                     values={"cpu": (10.0, 2.0, 30.0), "memory_used": (1e9, 1e9, 1e9)},
                     rx=10, tx=2)
    await add_minute(db, a, h + dt.timedelta(hours=1), samples=60,
                     values={"cpu": (40.0, 40.0, 40.0)}, rx=100, tx=20)
    await add_minute(db, b, h, samples=60, values={"cpu": (1.0, 0.5, 1.5)})
    # a summary from the next day, not yet complete at "now"
    now = utc(2026, 3, 2, 0, 30)
    await add_minute(db, a, utc(2026, 3, 2, 0, 0), samples=60, values={"cpu": (7.0, 7.0, 7.0)})

    await rollups.roll(db, now)
    hours = await _hour_rows(db)
    assert [(r["server_id"], r["bucket"]) for r in hours] == [
        (a, h), (a, h + dt.timedelta(hours=1)), (b, h)]
    first = hours[0]
    assert first["samples"] == 60 and first["minutes"] == 2
    assert abs(first["cpu_avg"] - (100 + 59 * 10) / 60) < 1e-4  # weighted by samples
    assert (first["cpu_min"], first["cpu_max"]) == (2.0, 100.0)
    assert first["memory_used_avg"] == 1e9  # only the minute that had it
    assert first["gpu_utilization_avg"] is None
    assert (first["net_rx_bytes"], first["net_tx_bytes"]) == (15, 3)
    assert utc(2026, 3, 2, 0) not in [r["bucket"] for r in hours]  # the hour still running

    days = await _hour_rows(db, "metrics_day")
    assert [(r["server_id"], r["bucket"]) for r in days] == [(a, utc(2026, 3, 1)),
                                                             (b, utc(2026, 3, 1))]
    day = days[0]
    assert day["samples"] == 120 and day["minutes"] == 3
    assert abs(day["cpu_avg"] - (100 + 59 * 10 + 60 * 40) / 120) < 1e-4
    assert (day["cpu_min"], day["cpu_max"]) == (2.0, 100.0)
    assert (day["net_rx_bytes"], day["net_tx_bytes"]) == (115, 23)

    await rollups.roll(db, now)  # again: the same rows, nothing doubled
    assert await _hour_rows(db) == hours
    assert await _hour_rows(db, "metrics_day") == days

    # A summary replayed late from an agent's spool lands in a rolled hour: the deep
    # pass folds it in.
    await add_minute(db, b, h + dt.timedelta(minutes=5), samples=60,
                     values={"cpu": (3.0, 3.0, 3.0)})
    await rollups.roll(db, now)  # the recent pass does not reach back 14 hours
    assert (await _hour_rows(db))[2]["minutes"] == 1
    await rollups.roll(db, now, lookback=rollups.LATE)
    late = (await _hour_rows(db))[2]
    assert late["minutes"] == 2 and late["cpu_avg"] == 2.0 and late["cpu_max"] == 3.0
    assert (await _hour_rows(db, "metrics_day"))[1]["minutes"] == 2


async def test_first_run_rolls_up_everything_already_there(db: asyncpg.Connection) -> None:
    a = await add_server(db)
    old = utc(2026, 1, 10, 5, 17)
    await add_minute(db, a, old)
    await rollups.roll(db, utc(2026, 3, 1, 12, 0))
    assert [r["bucket"] for r in await _hour_rows(db)] == [utc(2026, 1, 10, 5)]
    assert [r["bucket"] for r in await _hour_rows(db, "metrics_day")] == [utc(2026, 1, 10)]
    assert await db_history.done_until(db, "hour") == utc(2026, 3, 1, 12)
    assert await db_history.done_until(db, "day") == utc(2026, 3, 1)


async def _names(db: asyncpg.Connection, table: str) -> list[str]:
    return [name for name, _, _ in await db_history.partitions(db, table)]


async def test_partitions_ahead(db: asyncpg.Connection) -> None:
    now = utc(2027, 12, 30, 23, 59)
    await rollups.create_ahead(db, now)
    minute = await _names(db, "metrics_minute")
    for day in ("20271230", "20271231", "20280101", "20280102"):  # today and 3 ahead
        assert f"metrics_minute_{day}" in minute
    hour = await _names(db, "metrics_hour")
    assert {"metrics_hour_202712", "metrics_hour_202801"} <= set(hour)
    assert {"metrics_day_2027", "metrics_day_2028"} <= set(await _names(db, "metrics_day"))
    await rollups.create_ahead(db, now)  # again: nothing new, no error
    assert await _names(db, "metrics_minute") == minute
    bounds = await db.fetchval(
        """SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c
           WHERE c.relname = 'metrics_hour_202712'""")
    assert "2027-12-01 00:00:00+00" in bounds and "2028-01-01 00:00:00+00" in bounds


async def test_retention_drops_whole_partitions(db: asyncpg.Connection, settings: Settings) -> None:
    a = await add_server(db)
    now = utc(2026, 11, 22, 8, 0)
    await add_minute(db, a, utc(2026, 10, 1, 12))  # 52 days old: past 30 days
    await add_minute(db, a, utc(2026, 11, 1, 12))  # 21 days: kept
    for bucket in (utc(2025, 9, 3), utc(2025, 11, 3)):  # 445 and 384 days
        await db.execute("SELECT metrics_hour_partition($1)", bucket)
        await db.execute("INSERT INTO metrics_hour (server_id, bucket, samples, minutes) "
                         "VALUES ($1, $2, 1, 1)", a, bucket)
    for bucket in (utc(2020, 6, 1), utc(2022, 6, 1)):
        await db.execute("SELECT metrics_day_partition($1)", bucket)
        await db.execute("INSERT INTO metrics_day (server_id, bucket, samples, minutes) "
                         "VALUES ($1, $2, 1, 1)", a, bucket)

    # Nothing is dropped that the next tier does not hold yet.
    dropped = await rollups.expire(db, settings, now)
    assert dropped == ["metrics_day_2020"]
    await rollups.roll(db, now)
    dropped = await rollups.expire(db, settings, now)
    assert "metrics_minute_20261001" in dropped and "metrics_hour_202509" in dropped
    assert all(name < "metrics_minute_20261023" for name in dropped
               if name.startswith("metrics_minute_"))
    assert "metrics_minute_20261101" in await _names(db, "metrics_minute")
    assert "metrics_hour_202511" in await _names(db, "metrics_hour")
    assert "metrics_day_2022" in await _names(db, "metrics_day")
    assert await db.fetchval("SELECT count(*) FROM metrics_minute") == 1
    # The rolled-up history of the dropped minutes is still there.
    assert await db.fetchval("SELECT count(*) FROM metrics_hour WHERE bucket = $1",
                             utc(2026, 10, 1, 12)) == 1

    shorter = dataclasses.replace(settings, metrics_minute_retention_days=2,
                                  metrics_hour_retention_days=30)
    dropped = await rollups.expire(db, shorter, now)
    assert "metrics_minute_20261101" in dropped and "metrics_hour_202511" in dropped
    assert await db.fetchval("SELECT count(*) FROM metrics_minute") == 0


async def test_the_job_runs_in_the_app(api: Api, db: asyncpg.Connection) -> None:
    """Started with the app: creates partitions ahead and reports itself healthy."""
    await api.login()
    for _ in range(100):
        status, body = await api.get("/api/admin/health/detailed")
        assert status == 200, body
        (job,) = [t for t in body["data"]["background_tasks"] if t["name"] == "rollups"]
        if job["runs"]:
            break
        await asyncio.sleep(0.05)
    assert job["running"] and job["runs"] >= 1 and job["last_error"] is None, job
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%Y%m%d")
    assert f"metrics_minute_{ahead}" in await _names(db, "metrics_minute")
    assert await db_history.done_until(db, "hour") is not None
