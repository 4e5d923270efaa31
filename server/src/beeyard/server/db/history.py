"""Metric history: plain SQL over metrics_minute (written by the ingest writer) and
its rollups metrics_hour and metrics_day (written here, by services/rollups.py).

Reading a coarse tier never misses the recent past: a tier's rows are completed
by the next finer tier's rows after the last bucket already rolled up (the
current hour is still only minutes, today only hours and minutes), so a chart,
a traffic total or an uptime figure always reaches up to the last summary.

Aggregation is the same everywhere: avg weighted by samples, min of mins, max
of maxes, byte counts summed, minute counts summed. Averages are computed in
double precision and stored as real, so rolling a rollup does not drift.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, TypeAlias

import asyncpg

from beeyard.shared.frames import SUMMARY_NAMES

Db: TypeAlias = "asyncpg.Pool | asyncpg.Connection"

_VALUE_COLUMNS = ", ".join(f"{n}_avg, {n}_min, {n}_max" for n in SUMMARY_NAMES)


def _aggregates() -> str:
    """avg/min/max of every metric over a group of rows that have a ``samples`` weight."""
    parts = []
    for n in SUMMARY_NAMES:
        parts.append(
            f"sum({n}_avg::float8 * samples) / "
            f"nullif(sum(samples) FILTER (WHERE {n}_avg IS NOT NULL), 0) AS {n}_avg"
        )
        parts.append(f"min({n}_min) AS {n}_min")
        parts.append(f"max({n}_max) AS {n}_max")
    return ",\n       ".join(parts)


_AGGREGATES = _aggregates()

# Each tier as a row source with the same columns: t, samples, minutes, bytes, values.
# Built from constants only ({lo} is one of our own bound expressions, never input).
_SELECT = f"samples, minutes, net_rx_bytes, net_tx_bytes, {_VALUE_COLUMNS}"
_SOURCE = {
    "minute": (
        "SELECT minute AS t, samples::integer AS samples, 1 AS minutes, "  # noqa: S608
        f"net_rx_bytes, net_tx_bytes, {_VALUE_COLUMNS} FROM metrics_minute "
        "WHERE server_id = $1 AND minute >= {lo} AND minute < $3"
    ),
    "hour": (
        f"SELECT bucket AS t, {_SELECT} FROM metrics_hour "  # noqa: S608
        "WHERE server_id = $1 AND bucket >= {lo} AND bucket < $3"
    ),
    "day": (
        f"SELECT bucket AS t, {_SELECT} FROM metrics_day "  # noqa: S608
        "WHERE server_id = $1 AND bucket >= {lo} AND bucket < $3"
    ),
}
_UPTO = {  # the end of the last bucket a rollup tier holds for the server, before $3
    "hour": "(SELECT coalesce(max(bucket) + interval '1 hour', '-infinity') FROM metrics_hour "
            "WHERE server_id = $1 AND bucket < $3)",
    "day": "(SELECT coalesce(max(bucket) + interval '1 day', '-infinity') FROM metrics_day "
           "WHERE server_id = $1 AND bucket < $3)",
}
_FINER = {"day": ["day", "hour", "minute"], "hour": ["hour", "minute"], "minute": ["minute"]}


def _rows(tier: str) -> str:
    """Rows of ``tier`` in [$2, $3), completed by finer tiers after its last rolled bucket."""
    chain = _FINER[tier]
    parts = []
    for i, name in enumerate(chain):
        bounds = ["$2::timestamptz"] + [_UPTO[c] for c in chain[:i]]
        lo = bounds[0] if len(bounds) == 1 else f"greatest({', '.join(bounds)})"
        parts.append(_SOURCE[name].format(lo=lo))
    return "\nUNION ALL\n".join(parts)


async def series(
    db: Db, server_id: int, tier: str, start: dt.datetime, end: dt.datetime, step: int
) -> list[dict[str, Any]]:
    """Buckets of ``step`` seconds (aligned to the unix epoch) in [start, end): ``bucket``
    (unix seconds), ``samples``, ``minutes``, ``net_rx_bytes``, ``net_tx_bytes`` and
    ``<name>_avg|min|max``; buckets without data are absent."""
    sql = f"""
        SELECT (floor(extract(epoch FROM t) / $4) * $4)::bigint AS bucket,
               sum(samples)::bigint AS samples, sum(minutes)::bigint AS minutes,
               sum(net_rx_bytes)::float8 AS net_rx_bytes, sum(net_tx_bytes)::float8 AS net_tx_bytes,
               {_AGGREGATES}
        FROM ({_rows(tier)}) AS r
        GROUP BY 1 ORDER BY 1"""  # noqa: S608 - built from constants only
    rows = await db.fetch(sql, server_id, start, end, step)
    return [dict(r) for r in rows]


async def totals(db: Db, server_id: int, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """Bytes and minute summaries in [start, end), from the coarsest tier that has them."""
    row = await db.fetchrow(
        f"""SELECT coalesce(sum(net_rx_bytes), 0)::float8 AS rx,
                   coalesce(sum(net_tx_bytes), 0)::float8 AS tx,
                   coalesce(sum(minutes), 0)::bigint AS minutes
            FROM ({_rows("day")}) AS r""",  # noqa: S608 - built from constants only
        server_id, start, end,
    )
    return dict(row)


# -- rollups ------------------------------------------------------------------------

_ROLLUP_COLUMNS = (
    "server_id, bucket, samples, minutes, net_rx_bytes, net_tx_bytes, " + _VALUE_COLUMNS
)
_UPDATE = ", ".join(
    f"{c} = EXCLUDED.{c}" for c in _ROLLUP_COLUMNS.replace(" ", "").split(",")
    if c not in ("server_id", "bucket")
)
_ROLL = {
    "hour": f"""
        INSERT INTO metrics_hour ({_ROLLUP_COLUMNS})
        SELECT server_id, date_trunc('hour', minute, 'UTC'), sum(samples)::integer,
               count(*)::integer, sum(net_rx_bytes)::bigint, sum(net_tx_bytes)::bigint,
               {_AGGREGATES}
        FROM metrics_minute WHERE minute >= $1 AND minute < $2
        GROUP BY 1, 2
        ON CONFLICT (server_id, bucket) DO UPDATE SET {_UPDATE}""",  # noqa: S608
    "day": f"""
        INSERT INTO metrics_day ({_ROLLUP_COLUMNS})
        SELECT server_id, date_trunc('day', bucket, 'UTC'), sum(samples)::integer,
               sum(minutes)::integer, sum(net_rx_bytes)::bigint, sum(net_tx_bytes)::bigint,
               {_AGGREGATES}
        FROM metrics_hour WHERE bucket >= $1 AND bucket < $2
        GROUP BY 1, 2
        ON CONFLICT (server_id, bucket) DO UPDATE SET {_UPDATE}""",  # noqa: S608
}


async def roll_up(db: Db, tier: str, start: dt.datetime, end: dt.datetime) -> int:
    """(Re)compute every ``tier`` bucket in [start, end) from the tier below; idempotent.
    ``start`` and ``end`` must be bucket boundaries. Returns the buckets written."""
    if tier == "hour":
        await ensure_partitions(db, "metrics_hour", start, end)
    else:
        await ensure_partitions(db, "metrics_day", start, end)
    status = await db.execute(_ROLL[tier], start, end)
    return int(status.split()[-1])


async def done_until(db: Db, tier: str) -> dt.datetime | None:
    value: dt.datetime | None = await db.fetchval(
        "SELECT done_until FROM rollup_state WHERE tier = $1", tier
    )
    return value


async def set_done_until(db: Db, tier: str, when: dt.datetime) -> None:
    await db.execute(
        """INSERT INTO rollup_state (tier, done_until) VALUES ($1, $2)
           ON CONFLICT (tier) DO UPDATE SET done_until = greatest(rollup_state.done_until,
                                                                  EXCLUDED.done_until)""",
        tier, when,
    )


async def earliest_minute(db: Db) -> dt.datetime | None:
    value: dt.datetime | None = await db.fetchval("SELECT min(minute) FROM metrics_minute")
    return value


# -- partitions ---------------------------------------------------------------------

# Partition names by table: the name's digits are the start of its range (UTC).
PARTITIONS = {
    "metrics_minute": (re.compile(r"metrics_minute_(\d{4})(\d{2})(\d{2})"), "day"),
    "metrics_hour": (re.compile(r"metrics_hour_(\d{4})(\d{2})"), "month"),
    "metrics_day": (re.compile(r"metrics_day_(\d{4})"), "year"),
}


def partition_range(table: str, name: str) -> tuple[dt.datetime, dt.datetime] | None:
    """[start, end) of one of our partitions, from its name; None for any other table."""
    pattern, unit = PARTITIONS[table]
    m = pattern.fullmatch(name)
    if m is None:
        return None
    parts = [int(g) for g in m.groups()] + [1, 1]
    start = dt.datetime(parts[0], parts[1], parts[2], tzinfo=dt.UTC)
    if unit == "day":
        end = start + dt.timedelta(days=1)
    elif unit == "month":
        end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    else:
        end = start.replace(year=start.year + 1)
    return start, end


async def partitions(db: Db, table: str) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """Our partitions of ``table``: (name, start, end), oldest first."""
    rows = await db.fetch(
        """SELECT c.relname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
           JOIN pg_namespace n ON n.oid = p.relnamespace
           WHERE p.relname = $1 AND n.nspname = current_schema()""",
        table,
    )
    out = []
    for r in rows:
        bounds = partition_range(table, r["relname"])
        if bounds is not None:
            out.append((r["relname"], *bounds))
    return sorted(out, key=lambda p: p[1])


async def ensure_partitions(db: Db, table: str, start: dt.datetime, end: dt.datetime) -> None:
    """Create the partitions of ``table`` that hold [start, end) (what exists is kept)."""
    unit = PARTITIONS[table][1]
    if table == "metrics_minute":
        await db.execute(
            "SELECT metrics_minute_partition(d::date) FROM generate_series("
            "($1::timestamptz AT TIME ZONE 'UTC')::date, "
            "($2::timestamptz - interval '1 microsecond') AT TIME ZONE 'UTC', interval '1 day') d",
            start, end,
        )
        return
    await db.execute(
        f"SELECT {table}_partition(g AT TIME ZONE 'UTC') FROM generate_series("  # noqa: S608
        f"date_trunc('{unit}', $1::timestamptz, 'UTC') AT TIME ZONE 'UTC', "
        f"($2::timestamptz - interval '1 microsecond') AT TIME ZONE 'UTC', interval '1 {unit}') g",
        start, end,
    )


async def drop_partition(db: Db, table: str, name: str) -> None:
    """Drop one of our partitions (the name is checked against the table's pattern)."""
    if partition_range(table, name) is None:
        raise ValueError(f"{name} is not a partition of {table}")
    await db.execute(f'DROP TABLE IF EXISTS "{name}"')


async def delete_server(conn: asyncpg.Connection, server_id: int) -> None:
    """Every metric row of a server, in every tier (the tiers have no foreign key)."""
    for table in ("metrics_minute", "metrics_hour", "metrics_day"):
        await conn.execute(f"DELETE FROM {table} WHERE server_id = $1", server_id)  # noqa: S608
