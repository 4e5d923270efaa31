"""Test data for the fleet's read side: servers and minute summaries inserted with
plain SQL (no agent needed), and live samples shaped like the wire's ``sample``."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import asyncpg

from beeyard.shared.frames import SUMMARY_NAMES


async def add_server(db: asyncpg.Connection, name: str = "web-1", **columns: Any) -> int:
    cols = {"name": name, "token_digest": secrets.token_bytes(32), **columns}
    names = ", ".join(cols)
    marks = ", ".join(f"${i + 1}" for i in range(len(cols)))
    server_id: int = await db.fetchval(
        f"INSERT INTO servers ({names}) VALUES ({marks}) RETURNING id",  # noqa: S608
        *cols.values(),
    )
    return server_id


async def add_minute(
    db: asyncpg.Connection, server_id: int, minute: dt.datetime, *, samples: int = 60,
    values: dict[str, tuple[float, float, float]] | None = None,
    rx: int | None = None, tx: int | None = None,
) -> None:
    """One metrics_minute row (its day's partition is created if missing)."""
    await db.execute("SELECT metrics_minute_partition($1::date)",
                     minute.astimezone(dt.UTC).date())
    values = values or {"cpu": (10.0, 5.0, 20.0)}
    cols = ["server_id", "minute", "samples", "net_rx_bytes", "net_tx_bytes"]
    args: list[Any] = [server_id, minute, samples, rx, tx]
    for name, (avg, low, high) in values.items():
        assert name in SUMMARY_NAMES
        cols += [f"{name}_avg", f"{name}_min", f"{name}_max"]
        args += [avg, low, high]
    marks = ", ".join(f"${i + 1}" for i in range(len(args)))
    await db.execute(
        f"INSERT INTO metrics_minute ({', '.join(cols)}) VALUES ({marks})", *args  # noqa: S608
    )


def metrics(cpu: float = 12.5, *, gpus: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A live sample's metrics map (frames.METRICS)."""
    return {
        "cpu": cpu,
        "cpu_cores": [cpu, cpu],
        "load": [0.5, 0.4, 0.3],
        "memory": {"total": 8e9, "used": 2e9, "available": 6e9, "percent": 25.0},
        "swap": {"total": 1e9, "used": 0.0, "percent": 0.0},
        "filesystems": [{"mount": "/", "type": "ext4", "device": "/dev/sda1", "size": 100.0,
                         "used": 40.0, "free": 60.0, "percent": 40.0}],
        "disks": [{"device": "sda", "read_bps": 100.0, "write_bps": 200.0, "read_iops": 1.0,
                   "write_iops": 2.0}],
        "net": [{"iface": "eth0", "rx_bps": 1000.0, "tx_bps": 500.0, "rx_bytes": 1e6,
                 "tx_bytes": 5e5}],
        "net_total": {"rx_bps": 1000.0, "tx_bps": 500.0, "rx_bytes": 1e6, "tx_bytes": 5e5},
        "connections": {"tcp": 10, "udp": 3},
        "processes": 120,
        "uptime": 3600.0,
        "temperatures": [{"label": "cpu", "celsius": 45.0}],
        "gpus": gpus or [],
    }


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)  # type: ignore[misc]


async def add_minutes(
    db: asyncpg.Connection, server_id: int, start: dt.datetime, count: int, *,
    samples: int = 60, cpu: float = 10.0, rx: int | None = None, tx: int | None = None,
) -> None:
    """``count`` consecutive minute rows from ``start``, cpu [cpu, cpu-1, cpu+1]."""
    end = start + dt.timedelta(minutes=count)
    day = start.astimezone(dt.UTC).date()
    while day <= end.astimezone(dt.UTC).date():
        await db.execute("SELECT metrics_minute_partition($1::date)", day)
        day += dt.timedelta(days=1)
    await db.execute(
        """INSERT INTO metrics_minute (server_id, minute, samples, net_rx_bytes, net_tx_bytes,
                                       cpu_avg, cpu_min, cpu_max)
           SELECT $1, g, $4, $5, $6, $7::real, $7::real - 1, $7::real + 1
           FROM generate_series($2::timestamptz, $3::timestamptz - interval '1 minute',
                                interval '1 minute') g""",
        server_id, start, end, samples, rx, tx, cpu,
    )
