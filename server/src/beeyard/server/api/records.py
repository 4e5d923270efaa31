"""Metric history of one server: records (any window, any resolution, JSON or CSV),
GPU records, daily uptime and traffic per cycle.

The handlers only parse and shape; which tier answers and how buckets are
aggregated is services/history.py, the SQL is db/history.py.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from aiohttp import web

from beeyard.server import context
from beeyard.server.auth.principal import Access
from beeyard.server.db import fleet
from beeyard.server.db import history as db
from beeyard.server.http.envelope import ApiError, ok
from beeyard.server.http.params import path_id
from beeyard.server.http.routing import route
from beeyard.server.services import history
from beeyard.shared.frames import SUMMARY_NAMES
from beeyard.shared.schema import Field, Schema

_TIME_DOC = "ISO 8601 (UTC when no offset is given) or unix seconds"

RECORDS_QUERY = Schema("RecordsQuery", (
    Field("from", "str", required=False, max=64, doc=f"window start, {_TIME_DOC}; "
          "default: an hour before `to`"),
    Field("to", "str", required=False, max=64, doc=f"window end, {_TIME_DOC}; default: now"),
    Field("points", "int", required=False, min=1, max=history.MAX_POINTS,
          default=history.DEFAULT_POINTS, doc="at most this many points"),
    Field("format", "str", required=False, choices=("json", "csv"), default="json",
          doc="csv: one row per point, with a header row"),
))
GPU_QUERY = Schema("GpuRecordsQuery", tuple(f for f in RECORDS_QUERY.fields
                                             if f.name != "format"))
UPTIME_QUERY = Schema("UptimeQuery", (
    Field("days", "int", required=False, min=1, max=400, default=30,
          doc="how many days, today included"),
))
TRAFFIC_QUERY = Schema("TrafficQuery", (
    Field("cycles", "int", required=False, min=1, max=60, default=12,
          doc="how many cycles, the current one included"),
))

_TRIPLE = {"type": "object", "properties": {k: {"type": "number"} for k in ("avg", "min", "max")}}
_RECORDS = {
    "type": "object",
    "properties": {
        "tier": {"type": "string", "enum": list(history.TIER_STEP)},
        "step_seconds": {"type": "integer"},
        "from": {"type": "string", "format": "date-time"},
        "to": {"type": "string", "format": "date-time"},
        "points": {"type": "array", "items": {"type": "object", "properties": {
            "ts": {"type": "integer"}, "time": {"type": "string", "format": "date-time"},
            "samples": {"type": "integer"},
            "values": {"type": "object", "properties": dict.fromkeys(SUMMARY_NAMES, _TRIPLE)},
        }}},
    },
}


async def _server(request: web.Request) -> int:
    server_id = path_id(request, "server")
    if await fleet.traffic_reset_day(context.pool(request), server_id) is None:
        raise ApiError(404, f"server {server_id} not found")
    return server_id


def _window(query: dict[str, Any]) -> tuple[float, float, float]:
    now = time.time()
    try:
        end = history.parse_time(query["to"], "to") if query["to"] else now
        start = (history.parse_time(query["from"], "from") if query["from"]
                 else end - history.DEFAULT_WINDOW)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    if start >= end:
        raise ApiError(422, "from: must be before to")
    return start, min(end, now + 60), now


async def _points(request: web.Request, server_id: int) -> tuple[history.Plan, list[Any]]:
    plan = _plan(request)
    if plan.tier == "live":
        samples = _ring(request, server_id, plan)
        if samples is not None:
            return plan, history.downsample_samples(samples, plan)
        plan = _plan(request, tier="minute")
    rows = await db.series(context.pool(request), server_id, plan.tier,
                           _utc(plan.start), _utc(plan.end), plan.step)
    return plan, [history.point_from_row(r) for r in rows]


def _plan(request: web.Request, tier: str | None = None) -> history.Plan:
    query = context.query(request)
    start, end, now = _window(query)
    settings = context.settings(request)
    return history.plan(start, end, query["points"], now,
                        minute_days=settings.metrics_minute_retention_days,
                        hour_days=settings.metrics_hour_retention_days, tier=tier)


def _ring(
    request: web.Request, server_id: int, plan: history.Plan
) -> list[tuple[float, dict[str, float]]] | None:
    """The live samples of the window, or None when the ring does not reach back to its
    start (then the minute summaries answer instead)."""
    live = request.app[context.LIVE]
    everything = live.ring(server_id)
    if not history.ring_covers(everything, plan, live.interval(server_id) or 1.0):
        return None
    return everything  # the plan takes those inside its window


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


@route("GET", "/api/servers/{id}/records", Access.VIEWER, "servers.records",
       query=RECORDS_QUERY, tags=("servers",), response=_RECORDS)
async def records(request: web.Request) -> web.StreamResponse:
    """Metric history of a server in at most ``points`` buckets (avg, min and max each).

    The server picks the tier: the live ring of the last 15 minutes when the window
    starts within them, else minute summaries while they are kept, else hourly and
    then daily rollups. ``step_seconds`` is the bucket width; buckets without data
    are left out. ``format=csv`` answers ``text/csv`` with a header row instead.
    """
    server_id = await _server(request)
    plan, points = await _points(request, server_id)
    if context.query(request)["format"] == "csv":
        return web.Response(
            text=history.to_csv(points), content_type="text/csv", charset="utf-8",
            headers={"Content-Disposition":
                     f'attachment; filename="server-{server_id}-{plan.tier}.csv"'},
        )
    return ok({"tier": plan.tier, "step_seconds": plan.step, "from": _utc(plan.start),
               "to": _utc(plan.end), "points": points})


@route("GET", "/api/servers/{id}/gpu-records", Access.VIEWER, "servers.gpu_records",
       query=GPU_QUERY, tags=("servers",))
async def gpu_records(request: web.Request) -> web.Response:
    """GPU history of a server: utilisation (mean over its GPUs) and memory used (sum).

    Chosen like records. Within the live window each point also lists every GPU
    (``gpus``: index, name, utilization, memory_used, memory_total, temperature);
    the stored tiers keep the host-wide figures only. Points without GPU data are
    left out.
    """
    server_id = await _server(request)
    plan = _plan(request)
    samples = _ring(request, server_id, plan) if plan.tier == "live" else None
    if samples is not None:
        gpus = request.app[context.LIVE].gpu_ring(server_id, plan.start - 1)
        points = history.gpu_points(gpus, plan)
    else:
        if plan.tier == "live":
            plan = _plan(request, tier="minute")
        rows = await db.series(context.pool(request), server_id, plan.tier,
                               _utc(plan.start), _utc(plan.end), plan.step)
        points = []
        for r in rows:
            p = history.point_from_row(r)
            values = {k: v for k, v in p["values"].items() if k.startswith("gpu_")}
            if values:
                points.append({**p, "values": values})
    return ok({"tier": plan.tier, "step_seconds": plan.step, "from": _utc(plan.start),
               "to": _utc(plan.end), "points": points})


@route("GET", "/api/servers/{id}/uptime-daily", Access.VIEWER, "servers.uptime_daily",
       query=UPTIME_QUERY, tags=("servers",))
async def uptime_daily(request: web.Request) -> web.Response:
    """Per UTC day, the fraction of minutes that have a summary from the agent.

    Oldest day first, today last (counted up to now). Days before the server was
    enrolled have ``uptime: null``; the enrollment day counts from enrollment.
    """
    server_id = await _server(request)
    days = context.query(request)["days"]
    now = dt.datetime.now(dt.UTC)
    created = await fleet.created_at(context.pool(request), server_id)
    today = now.date()
    first = today - dt.timedelta(days=days - 1)
    rows = await db.series(context.pool(request), server_id, "day",
                           _midnight(first), now, 86400)
    return ok(history.uptime(rows, first, today, now, created))


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


@route("GET", "/api/servers/{id}/traffic", Access.VIEWER, "servers.traffic",
       query=TRAFFIC_QUERY, tags=("servers",))
async def traffic(request: web.Request) -> web.Response:
    """Bytes received and sent per traffic cycle: the current cycle and those before it.

    A cycle starts on the server's ``traffic_reset_day`` (UTC, 1 by default; past a
    short month's end, on its last day). Totals come from the minute summaries' byte
    counts and, for older cycles, from the rollups.
    """
    server_id = await _server(request)
    pool = context.pool(request)
    reset_day = await fleet.traffic_reset_day(pool, server_id)
    assert reset_day is not None
    now = dt.datetime.now(dt.UTC)
    out = []
    for start, end in history.cycles(now.date(), reset_day, context.query(request)["cycles"]):
        t = await db.totals(pool, server_id, _midnight(start), min(_midnight(end), now))
        out.append({"start": _midnight(start), "end": _midnight(end),
                    "rx_bytes": int(t["rx"]), "tx_bytes": int(t["tx"]),
                    "total_bytes": int(t["rx"] + t["tx"])})
    return ok({"reset_day": reset_day, "current": out[0], "previous": out[1:]})


ROUTES = [records, gpu_records, uptime_daily, traffic]
