"""Records: the tier chosen for a window, downsampling bounds, CSV, GPU records,
uptime per day and traffic per cycle, against real rows in PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from tests.conftest import Api
from tests.fleetdata import add_minute, add_minutes, add_server, metrics

from beeyard.server import context
from beeyard.server.services import history, rollups
from beeyard.shared.frames import SUMMARY_NAMES

Client = TestClient  # type: ignore[type-arg]


def _minute(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(t // 60) * 60, dt.UTC)


async def _records(api: Api, server: int, **params: Any) -> dict[str, Any]:
    status, body = await api.get(f"/api/servers/{server}/records", params=params)
    assert status == 200, body
    return body["data"]  # type: ignore[no-any-return]


async def test_default_window_is_the_last_hour_of_minutes(
    api: Api, db: asyncpg.Connection
) -> None:
    await api.login()
    server = await add_server(db)
    now = time.time()
    await add_minutes(db, server, _minute(now - 3 * 3600), 3 * 60 + 1, cpu=30.0)
    data = await _records(api, server)
    assert data["tier"] == "minute" and data["step_seconds"] == 60
    assert 55 <= len(data["points"]) <= 61
    point = data["points"][0]
    assert point["values"]["cpu"] == {"avg": 30.0, "min": 29.0, "max": 31.0}
    assert point["samples"] == 60 and point["ts"] % 60 == 0
    assert set(point["values"]) == {"cpu"}  # metrics without data are left out


async def test_live_tier_within_fifteen_minutes(
    api: Api, client: Client, db: asyncpg.Connection
) -> None:
    await api.login()
    server = await add_server(db)
    live = client.server.app[context.LIVE]
    now = int(time.time())
    live.mark_online(server)
    for i in range(960):  # a full ring at 1 s: it covers any alignment of the window
        live.record_sample(server, now - 960 + i, metrics(cpu=float(i % 10)))
    data = await _records(api, server, **{"from": str(now - 600), "points": "1000"})
    assert data["tier"] == "live" and data["step_seconds"] == 1
    assert len(data["points"]) == 600
    assert data["points"][0]["ts"] == now - 600
    assert data["points"][0]["values"]["cpu"]["avg"] == 0.0
    assert data["points"][0]["values"]["net_rx_bps"]["max"] == 1000.0
    assert data["points"][0]["values"]["disk_used_percent"]["avg"] == 40.0

    data = await _records(api, server, **{"from": str(now - 600), "points": "10"})
    assert data["tier"] == "live" and data["step_seconds"] == 120  # 60 s would make 11
    assert len(data["points"]) <= 10
    first = int(history.parse_time(data["from"], "from"))  # aligned down to 120 s
    assert now - 720 < first <= now - 600
    assert sum(p["samples"] for p in data["points"]) == now - first
    for p in data["points"]:
        cpu = p["values"]["cpu"]
        if p["samples"] >= 10:  # a whole 0..9 cycle of cpu values in the bucket
            assert cpu["min"] == 0.0 and cpu["max"] == 9.0, p
        else:  # the newest bucket holds only the seconds since its start (now % 120)
            assert 0.0 <= cpu["min"] <= cpu["max"] <= 9.0, p


async def test_a_young_ring_gives_way_to_minutes(
    api: Api, client: Client, db: asyncpg.Connection
) -> None:
    """After a restart the ring holds only the last moments; the minute summaries that the
    agent replayed from its spool cover the whole window."""
    await api.login()
    server = await add_server(db)
    now = time.time()
    await add_minutes(db, server, _minute(now - 600), 9, cpu=3.0)
    live = client.server.app[context.LIVE]
    for i in range(30):
        live.record_sample(server, now - 30 + i, metrics())
    data = await _records(api, server, **{"from": str(int(now - 600))})
    assert data["tier"] == "minute" and data["step_seconds"] == 60
    assert len(data["points"]) == 9
    _, body = await api.get(f"/api/servers/{server}/gpu-records",
                            params={"from": str(int(now - 600))})
    assert body["data"]["tier"] == "minute"


async def test_hour_tier_is_completed_by_unrolled_minutes(
    api: Api, db: asyncpg.Connection
) -> None:
    await api.login()
    server = await add_server(db)
    now = dt.datetime.now(dt.UTC)
    old = (now - dt.timedelta(days=35)).replace(minute=0, second=0, microsecond=0)
    await db.execute("SELECT metrics_hour_partition($1)", old)
    await db.execute(
        """INSERT INTO metrics_hour (server_id, bucket, samples, minutes, cpu_avg, cpu_min,
           cpu_max) VALUES ($1, $2, 3600, 60, 50, 1, 99)""", server, old)
    # Five minutes inside one clock hour (an hour ago), so they fall in a single bucket
    # whatever the time of day the test runs at.
    hour = (now - dt.timedelta(hours=1)).replace(minute=10, second=0, microsecond=0)
    await add_minutes(db, server, hour, 5, cpu=7.0)
    data = await _records(api, server, **{
        "from": (now - dt.timedelta(days=36)).isoformat(), "points": "2000"})
    assert data["tier"] == "hour"
    cpus = [p["values"]["cpu"]["avg"] for p in data["points"]]
    assert cpus[0] == 50.0 and cpus[-1] == 7.0
    assert data["points"][-1]["samples"] == 5 * 60


async def test_hour_and_day_tiers_for_old_windows(api: Api, db: asyncpg.Connection) -> None:
    await api.login()
    server = await add_server(db)
    now = dt.datetime.now(dt.UTC)
    for days_ago in (45, 44, 600):
        bucket = (now - dt.timedelta(days=days_ago)).replace(minute=0, second=0, microsecond=0)
        await db.execute("SELECT metrics_hour_partition($1)", bucket)
        await db.execute("SELECT metrics_day_partition($1)", bucket)
        await db.execute(
            """INSERT INTO metrics_hour (server_id, bucket, samples, minutes, cpu_avg, cpu_min,
               cpu_max) VALUES ($1, $2, 3600, 60, 50, 1, 99)""", server, bucket)
        day = bucket.replace(hour=0)
        await db.execute(
            """INSERT INTO metrics_day (server_id, bucket, samples, minutes, cpu_avg, cpu_min,
               cpu_max) VALUES ($1, $2, 86400, 1440, 40, 2, 98)""", server, day)
    data = await _records(api, server, **{
        "from": (now - dt.timedelta(days=46)).isoformat(),
        "to": (now - dt.timedelta(days=43)).isoformat(), "points": "500"})
    assert data["tier"] == "hour" and data["step_seconds"] == 3600
    assert [p["values"]["cpu"]["avg"] for p in data["points"]] == [50.0, 50.0]

    data = await _records(api, server, **{
        "from": (now - dt.timedelta(days=700)).isoformat(), "points": "100"})
    assert data["tier"] == "day"
    assert data["step_seconds"] % 86400 == 0 and len(data["points"]) <= 100
    assert {p["values"]["cpu"]["max"] for p in data["points"]} == {98.0}


async def test_downsampling_stays_within_points(api: Api, db: asyncpg.Connection) -> None:
    await api.login()
    server = await add_server(db)
    now = time.time()
    start = _minute(now - 86400)
    await add_minutes(db, server, start, 24 * 60, cpu=20.0, samples=30)
    for points in (1, 7, 50, 299, 1440, 5000):
        data = await _records(api, server, **{"from": str(int(now - 86400)), "to": str(int(now)),
                                              "points": str(points)})
        assert data["tier"] == "minute"
        assert 1 <= len(data["points"]) <= points, (points, len(data["points"]))
        step = data["step_seconds"]
        assert step % 60 == 0
        assert all(p["ts"] % step == 0 for p in data["points"])
        assert sum(p["samples"] for p in data["points"]) == 24 * 60 * 30
    # a weighted average: 1 sample at 100 and 59 at 0 in one bucket average 100/60
    other = await add_server(db, "weights")
    base = _minute(now - 7200).replace(minute=0)
    await add_minute(db, other, base, samples=1, values={"cpu": (100.0, 100.0, 100.0)})
    await add_minute(db, other, base + dt.timedelta(minutes=1), samples=59,
                     values={"cpu": (0.0, 0.0, 0.0)})
    data = await _records(api, other, **{"from": str(base.timestamp()),
                                         "to": str(base.timestamp() + 3600), "points": "1"})
    (point,) = data["points"]
    assert abs(point["values"]["cpu"]["avg"] - 100 / 60) < 1e-4
    assert point["values"]["cpu"]["max"] == 100.0 and point["values"]["cpu"]["min"] == 0.0


async def test_csv_export(api: Api, client: Client, db: asyncpg.Connection) -> None:
    await api.login()
    server = await add_server(db)
    now = time.time()
    await add_minutes(db, server, _minute(now - 1800), 10, cpu=5.5)
    async with client.get(f"/api/servers/{server}/records",
                          params={"format": "csv", "from": str(int(now - 3600))}) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/csv"
        assert "attachment" in resp.headers["Content-Disposition"]
        text = await resp.text()
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    assert header[:3] == ["time", "ts", "samples"]
    assert len(header) == 3 + 3 * len(SUMMARY_NAMES)
    assert len(rows) == 11
    first = dict(zip(header, rows[1], strict=True))
    assert float(first["cpu_avg"]) == 5.5 and first["memory_used_avg"] == ""
    assert first["time"].endswith("Z")


async def test_bad_requests(api: Api, db: asyncpg.Connection) -> None:
    await api.login()
    server = await add_server(db)
    for params, word in [
        ({"from": "2026-01-02", "to": "2026-01-01"}, "before"),
        ({"from": "yesterday"}, "ISO 8601"),
        ({"points": "0"}, "points"),
        ({"points": "5001"}, "points"),
        ({"format": "xml"}, "format"),
        ({"step": "60"}, "unknown"),
    ]:
        status, body = await api.get(f"/api/servers/{server}/records", params=params)
        assert status == 422 and word in body["error"], (params, body)
    for path in ("records", "gpu-records", "uptime-daily", "traffic"):
        status, body = await api.get(f"/api/servers/999999/{path}")
        assert status == 404, path


async def test_gpu_records(api: Api, client: Client, db: asyncpg.Connection) -> None:
    await api.login()
    server = await add_server(db)
    live = client.server.app[context.LIVE]
    now = time.time()
    gpus = [{"index": 0, "name": "A100", "utilization": 80.0, "memory_used": 4e9,
             "memory_total": 4e10, "temperature": 60.0},
            {"index": 1, "name": "A100", "utilization": 20.0, "memory_used": 1e9,
             "memory_total": 4e10}]
    for i in range(5):
        live.record_sample(server, now - 5 + i, metrics(gpus=gpus))
    status, body = await api.get(f"/api/servers/{server}/gpu-records",
                                 params={"from": str(int(now - 5))})
    assert status == 200, body
    data = body["data"]
    assert data["tier"] == "live" and len(data["points"]) == 5
    p = data["points"][0]
    assert p["values"]["gpu_utilization"]["avg"] == 50.0
    assert p["values"]["gpu_memory_used"]["avg"] == 5e9
    assert [g["index"] for g in p["gpus"]] == [0, 1]
    assert p["gpus"][0]["utilization"]["max"] == 80.0 and "temperature" not in p["gpus"][1]
    # stored tiers: the host-wide figures
    await add_minute(db, server, _minute(now - 1800),
                     values={"gpu_utilization": (30.0, 10.0, 90.0), "cpu": (1.0, 1.0, 1.0)})
    await add_minute(db, server, _minute(now - 1740), values={"cpu": (1.0, 1.0, 1.0)})
    status, body = await api.get(f"/api/servers/{server}/gpu-records")
    data = body["data"]
    assert data["tier"] == "minute"
    assert [set(p["values"]) for p in data["points"]] == [{"gpu_utilization"}]


async def test_uptime_daily(api: Api, db: asyncpg.Connection) -> None:
    await api.login()
    now = dt.datetime.now(dt.UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    server = await add_server(db, created_at=today - dt.timedelta(days=3, hours=-12))
    await add_minutes(db, server, today - dt.timedelta(days=1), 720)  # half of yesterday
    await add_minutes(db, server, today - dt.timedelta(days=2), 1440)  # all the day before
    status, body = await api.get(f"/api/servers/{server}/uptime-daily", params={"days": "5"})
    assert status == 200, body
    days = body["data"]
    assert [d["date"] for d in days] == [
        (today - dt.timedelta(days=n)).date().isoformat() for n in range(4, -1, -1)]
    assert days[0]["uptime"] is None  # before enrollment
    assert days[1]["possible_minutes"] == 720 and days[1]["uptime"] == 0.0  # enrolled at noon
    assert days[2]["uptime"] == 1.0
    assert days[3]["uptime"] == 0.5
    # rolled up, the answer is the same (the day tier counts minutes too)
    await rollups.roll(db, now, lookback=dt.timedelta(days=3))
    assert await db.fetchval("SELECT count(*) FROM metrics_day WHERE server_id = $1", server) == 2
    await db.execute("DELETE FROM metrics_minute WHERE minute < $1", today)
    status, again = await api.get(f"/api/servers/{server}/uptime-daily", params={"days": "5"})
    assert again["data"] == days


async def test_traffic_cycles_follow_the_reset_day(api: Api, db: asyncpg.Connection) -> None:
    await api.login()
    server = await add_server(db)
    today = dt.datetime.now(dt.UTC).date()
    status, body = await api.put(f"/api/servers/{server}", {"traffic_reset_day": 31})
    assert status == 200
    (cur_start, cur_end), (prev_start, _), (old_start, _) = history.cycles(today, 31, 3)
    assert cur_end > today >= cur_start

    def midnight(d: dt.date) -> dt.datetime:
        return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)

    # current cycle: two minutes on its first day; previous cycle: its last minute
    await add_minutes(db, server, midnight(cur_start), 2, rx=1000, tx=10)
    await add_minutes(db, server, midnight(cur_start) - dt.timedelta(minutes=1), 1, rx=7, tx=3)
    # a cycle before: only a daily rollup is left
    await db.execute("SELECT metrics_day_partition($1)", midnight(old_start))
    await db.execute(
        """INSERT INTO metrics_day (server_id, bucket, samples, minutes, net_rx_bytes,
           net_tx_bytes) VALUES ($1, $2, 60, 1, 5000000000, 42)""", server, midnight(old_start))
    status, body = await api.get(f"/api/servers/{server}/traffic", params={"cycles": "3"})
    assert status == 200, body
    data = body["data"]
    assert data["reset_day"] == 31
    assert data["current"]["start"].startswith(cur_start.isoformat())
    assert data["current"]["rx_bytes"] == 2000 and data["current"]["tx_bytes"] == 20
    prev, old = data["previous"]
    assert prev["start"].startswith(prev_start.isoformat())
    assert prev["end"] == data["current"]["start"]
    assert (prev["rx_bytes"], prev["tx_bytes"], prev["total_bytes"]) == (7, 3, 10)
    assert old["rx_bytes"] == 5_000_000_000 and old["tx_bytes"] == 42
