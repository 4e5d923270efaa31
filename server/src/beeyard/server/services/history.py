"""Metric history: which tier answers a window, and the arithmetic shared by every tier.

Tiers, finest first (DESIGN.md, Persistence):

- ``live``: the in-memory ring of the last 15 minutes of samples (hub/live.py);
- ``minute``: one summary per minute from the agents (metrics_minute), kept for
  ``metrics_minute_retention_days``;
- ``hour`` and ``day``: rollups of the minutes (services/rollups.py), kept for
  ``metrics_hour_retention_days`` and ``metrics_day_retention_days``.

A window is answered by the finest tier that still holds its start, so a chart
of the last ten minutes shows every sample and a chart of last year costs a few
hundred rows. Whatever the tier, points are buckets of ``step`` seconds with
avg (weighted by samples), min and max per metric: a rollup of a rollup stays
exact, and a spike survives downsampling in ``max``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from beeyard.server.hub.live import RING_SECONDS
from beeyard.shared.frames import SUMMARY_NAMES
from beeyard.shared.summaries import scalars

TIER_STEP = {"live": 1, "minute": 60, "hour": 3600, "day": 86400}
DEFAULT_WINDOW = 3600
DEFAULT_POINTS = 300
MAX_POINTS = 5000
NICE_STEPS = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400,
)


@dataclass(frozen=True)
class Plan:
    tier: str
    start: float  # unix seconds, aligned down to ``step``
    end: float
    step: int


def choose_tier(
    start: float, now: float, *, minute_days: int, hour_days: int
) -> str:
    """The finest tier that still holds ``start``."""
    if start >= now - RING_SECONDS:
        return "live"
    if start >= now - minute_days * 86400:
        return "minute"
    if start >= now - hour_days * 86400:
        return "hour"
    return "day"


def plan(start: float, end: float, points: int, now: float, *, minute_days: int,
         hour_days: int, tier: str | None = None) -> Plan:
    """The tier and bucket width for ``[start, end)`` in at most ``points`` buckets.

    ``tier`` overrides the choice (the live ring of a server that was not connected
    for the whole window). The step is the smallest "round" width (``NICE_STEPS``)
    that is a whole multiple of the tier's own resolution and gives at most
    ``points`` buckets: every bucket
    holds whole tier rows, axis ticks fall on round times, and buckets line up across
    requests (a chart that refreshes does not see its points shift).
    """
    if tier is None:
        tier = choose_tier(start, now, minute_days=minute_days, hour_days=hour_days)
    base = TIER_STEP[tier]
    steps = [n for n in NICE_STEPS if n % base == 0]
    k = 1
    while True:
        step = steps[k - 1] if k <= len(steps) else NICE_STEPS[-1] * (k - len(steps) + 1)
        if math.floor(end / step) - math.floor(start / step) + 1 <= points:
            break
        k += 1
    aligned = math.floor(start / step) * step
    return Plan(tier, float(aligned), end, step)


def ring_covers(samples: list[tuple[float, dict[str, float]]], p: Plan, interval: float) -> bool:
    """Whether the live ring reaches back to the window's start. After a restart of the
    server, or a reconnect of the agent, the ring is young while the minute summaries
    (replayed from the agent's spool) are complete: then the minute tier answers."""
    return bool(samples) and samples[0][0] <= max(p.start, samples[-1][0] - RING_SECONDS) + max(
        2 * interval, 2.0)


def parse_time(raw: str, name: str) -> float:
    """Unix seconds from ISO 8601 (UTC when no offset is given) or a number of seconds.

    Raises ValueError with a message that names the parameter.
    """
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{name}: must be ISO 8601 (2026-11-22T08:00:00Z) or unix seconds"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()
    if not math.isfinite(value) or not 0 <= value < 2**37:
        raise ValueError(f"{name}: unix seconds out of range")
    return value


# -- live samples as summaries ------------------------------------------------------


class _Bucket:
    __slots__ = ("samples", "stats")

    def __init__(self) -> None:
        self.samples = 0
        self.stats: dict[str, list[float]] = {}  # name -> [weighted sum, weight, min, max]

    def add(self, values: dict[str, Sequence[float] | None], weight: int) -> None:
        self.samples += weight
        for name, triple in values.items():
            if triple is None:
                continue
            avg, low, high = triple
            s = self.stats.get(name)
            if s is None:
                self.stats[name] = [avg * weight, float(weight), low, high]
            else:
                s[0] += avg * weight
                s[1] += weight
                s[2] = min(s[2], low)
                s[3] = max(s[3], high)


def downsample_samples(
    samples: Iterable[tuple[float, dict[str, float]]], p: Plan
) -> list[dict[str, Any]]:
    """Live ring scalars inside the plan's window, as points of ``p.step`` seconds."""
    buckets: dict[int, _Bucket] = {}
    for ts, sample in samples:
        if not p.start <= ts < p.end:
            continue
        key = int(ts // p.step) * p.step
        values = {n: (v, v, v) for n, v in sample.items()}
        buckets.setdefault(key, _Bucket()).add(values, 1)  # type: ignore[arg-type]
    return [_point(ts, b.samples, {n: _triple(s) for n, s in b.stats.items()})
            for ts, b in sorted(buckets.items())]


def _triple(s: list[float]) -> tuple[float, float, float]:
    return (s[0] / s[1], s[2], s[3])


def point_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A database bucket row (``bucket``: unix seconds, ``samples``, ``<name>_avg|min|max``)."""
    values = {}
    for name in SUMMARY_NAMES:
        avg = row.get(f"{name}_avg")
        if avg is not None:
            values[name] = (avg, row[f"{name}_min"], row[f"{name}_max"])
    return _point(int(row["bucket"]), int(row["samples"]), values)


def _point(ts: int, samples: int, values: dict[str, tuple[float, float, float]]) -> dict[str, Any]:
    return {
        "ts": ts,
        "time": dt.datetime.fromtimestamp(ts, dt.UTC),
        "samples": samples,
        "values": {n: {"avg": v[0], "min": v[1], "max": v[2]} for n, v in values.items()},
    }


def to_csv(points: list[dict[str, Any]]) -> str:
    """One row per point: time, unix ts, samples, then avg/min/max of every metric
    (empty where the point has no value)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    header = ["time", "ts", "samples"]
    for name in SUMMARY_NAMES:
        header += [f"{name}_avg", f"{name}_min", f"{name}_max"]
    writer.writerow(header)
    for p in points:
        row: list[Any] = [p["time"].isoformat().replace("+00:00", "Z"), p["ts"], p["samples"]]
        for name in SUMMARY_NAMES:
            v = p["values"].get(name)
            row += ["", "", ""] if v is None else [_num(v["avg"]), _num(v["min"]), _num(v["max"])]
        writer.writerow(row)
    return out.getvalue()


def _num(value: float) -> str:
    return repr(round(float(value), 6))


# -- traffic cycles -----------------------------------------------------------------


def cycle_start(day: dt.date, reset_day: int) -> dt.date:
    """The first day of the traffic cycle that holds ``day``. A reset day past the end of
    a short month falls on that month's last day (31 → 30 April, 28/29 February)."""
    this_month = _reset_in(day.year, day.month, reset_day)
    if day >= this_month:
        return this_month
    year, month = (day.year, day.month - 1) if day.month > 1 else (day.year - 1, 12)
    return _reset_in(year, month, reset_day)


def next_cycle_start(start: dt.date, reset_day: int) -> dt.date:
    year, month = (start.year, start.month + 1) if start.month < 12 else (start.year + 1, 1)
    return _reset_in(year, month, reset_day)


def _reset_in(year: int, month: int, reset_day: int) -> dt.date:
    import calendar

    return dt.date(year, month, min(reset_day, calendar.monthrange(year, month)[1]))


def cycles(today: dt.date, reset_day: int, count: int) -> list[tuple[dt.date, dt.date]]:
    """The current cycle and ``count - 1`` before it, newest first, as [start, end)."""
    start = cycle_start(today, reset_day)
    out = [(start, next_cycle_start(start, reset_day))]
    while len(out) < count:
        prev = cycle_start(out[-1][0] - dt.timedelta(days=1), reset_day)
        out.append((prev, out[-1][0]))
    return out


# -- GPUs and uptime ----------------------------------------------------------------


def gpu_points(
    samples: Iterable[tuple[float, list[dict[str, Any]]]], p: Plan
) -> list[dict[str, Any]]:
    """Live GPU readings as points: the host-wide figures plus every GPU's own."""
    per_gpu: dict[int, dict[int, dict[str, Any]]] = {}  # bucket -> index -> stats
    overall: dict[int, _Bucket] = {}
    for ts, gpus in samples:
        if not gpus or not p.start <= ts < p.end:
            continue
        key = int(ts // p.step) * p.step
        values = {n: (v, v, v) for n, v in scalars({"gpus": gpus}).items()}
        overall.setdefault(key, _Bucket()).add(values, 1)  # type: ignore[arg-type]
        for g in gpus:
            slot = per_gpu.setdefault(key, {}).setdefault(g["index"], {
                "index": g["index"], "name": g["name"], "memory_total": g["memory_total"],
                "stats": _Bucket(),
            })
            fields = {"utilization": g["utilization"], "memory_used": g["memory_used"]}
            if g.get("temperature") is not None:
                fields["temperature"] = g["temperature"]
            slot["stats"].add({k: (v, v, v) for k, v in fields.items()}, 1)
    out = []
    for key, bucket in sorted(overall.items()):
        point = _point(key, bucket.samples, {n: _triple(s) for n, s in bucket.stats.items()})
        point["gpus"] = [
            {"index": g["index"], "name": g["name"], "memory_total": g["memory_total"],
             **{n: dict(zip(("avg", "min", "max"), _triple(s), strict=True))
                for n, s in g["stats"].stats.items()}}
            for _, g in sorted(per_gpu.get(key, {}).items())
        ]
        out.append(point)
    return out


def uptime(
    rows: list[dict[str, Any]], first: dt.date, today: dt.date, now: dt.datetime,
    created: dt.datetime | None,
) -> list[dict[str, Any]]:
    """Per day from ``first`` to ``today``: minutes with a summary over the minutes the
    day could have had (today: so far; the enrollment day: since enrollment)."""
    by_day = {dt.datetime.fromtimestamp(r["bucket"], dt.UTC).date(): int(r["minutes"])
              for r in rows}
    out = []
    day = first
    while day <= today:
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        end = min(start + dt.timedelta(days=1), now)
        if created is not None and created > start:
            start = min(created.replace(second=0, microsecond=0), end)
        possible = math.ceil((end - start).total_seconds() / 60)
        minutes = by_day.get(day, 0)
        fraction = None if possible <= 0 else min(1.0, minutes / possible)
        if created is not None and created >= end:
            fraction = None
        out.append({"date": day, "minutes": minutes, "possible_minutes": max(possible, 0),
                    "uptime": fraction})
        day += dt.timedelta(days=1)
    return out
