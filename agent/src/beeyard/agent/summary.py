"""Minute summaries: the agent's own samples folded into avg/min/max per wall-clock minute.

Why on the agent: the server keeps live samples only in memory, so the
durable history is what the agent summarises. Doing it here costs a few
additions per sample and turns 60 frames a minute into one durable record
that survives outages through the spool.

A bucket closes when the first sample of a later minute arrives (or at
shutdown, as a partial minute). A clock stepped backwards closes the bucket
too; the earlier minute then starts afresh, and the spool merges it with an
unacknowledged entry of the same minute (``merge``).
"""

from __future__ import annotations

from typing import Any

from beeyard.agent.collectors import Reading
from beeyard.shared.frames import SUMMARY_NAMES

_LIMIT = 1e18  # the bound of an aggregate value on the wire


def scalars(reading: Reading) -> dict[str, float]:
    """The SUMMARY_NAMES values of one reading; a name without data is left out."""
    m = reading.metrics
    out: dict[str, float] = {"cpu": m["cpu"]}
    load = m["load"]
    out["load1"], out["load5"], out["load15"] = load[0], load[1], load[2]
    out["memory_used"] = m["memory"]["used"]
    out["memory_percent"] = m["memory"]["percent"]
    out["swap_used"] = m["swap"]["used"]
    fs = m.get("filesystems") or []
    used = sum(f["used"] for f in fs)
    room = used + sum(f["free"] for f in fs)
    if room > 0:
        out["disk_used_percent"] = 100.0 * used / room
    local = reading.local
    if "disk_read_bps" in local:
        out["disk_read_bps"] = local["disk_read_bps"]
        out["disk_write_bps"] = local["disk_write_bps"]
    out["net_rx_bps"] = m["net_total"]["rx_bps"]
    out["net_tx_bps"] = m["net_total"]["tx_bps"]
    out["tcp"] = float(m["connections"]["tcp"])
    out["udp"] = float(m["connections"]["udp"])
    out["processes"] = float(m["processes"])
    if "temperature_max" in local:
        out["temperature_max"] = local["temperature_max"]
    gpus = m.get("gpus") or []
    if gpus:
        out["gpu_utilization"] = sum(g["utilization"] for g in gpus) / len(gpus)
        out["gpu_memory_used"] = sum(g["memory_used"] for g in gpus)
    return out


def minute_of(ts: float) -> int:
    return int(ts // 60) * 60


def _triple(stat: list[float]) -> list[float]:
    """[avg, min, max] of a ``[count, total, low, high]`` accumulator."""
    return [_clamp(stat[1] / stat[0]), _clamp(stat[2]), _clamp(stat[3])]


def _clamp(value: float) -> float:
    return max(-_LIMIT, min(_LIMIT, value))


class MinuteAggregator:
    """Feed readings in time order; ``add`` returns a finished minute's summary body."""

    def __init__(self) -> None:
        self._minute: int | None = None
        self._samples = 0
        # name -> [count, total, low, high]: plain lists updated in place, because a
        # method call per value (17 a sample) is a measurable part of a cold sample
        self._stats: dict[str, list[float]] = {}
        self._rx = 0.0
        self._tx = 0.0

    def add(self, reading: Reading) -> dict[str, Any] | None:
        minute = minute_of(reading.ts)
        done = self.flush() if self._minute is not None and minute != self._minute else None
        self._minute = minute
        self._samples += 1
        stats = self._stats
        for name, value in scalars(reading).items():
            stat = stats.get(name)
            if stat is None:
                stats[name] = [1, value, value, value]
            else:
                stat[0] += 1
                stat[1] += value
                if value < stat[2]:
                    stat[2] = value
                elif value > stat[3]:
                    stat[3] = value
        self._rx += reading.local.get("net_rx_delta", 0.0)
        self._tx += reading.local.get("net_tx_delta", 0.0)
        return done

    def flush(self) -> dict[str, Any] | None:
        """The current (possibly partial) minute's summary, and start empty."""
        if self._minute is None or self._samples == 0:
            return None
        body = {
            "minute": self._minute,
            "samples": min(self._samples, 3600),
            "values": {name: _triple(stat) for name, stat in self._stats.items()},
            "net_rx_bytes": self._rx,
            "net_tx_bytes": self._tx,
        }
        self._minute = None
        self._samples = 0
        self._stats = {}
        self._rx = self._tx = 0.0
        return body


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two summaries of the same minute (a restart within it) as one: averages
    weighted by sample count, extremes of both, byte counts added."""
    na, nb = a["samples"], b["samples"]
    values: dict[str, list[float]] = {}
    va, vb = a.get("values") or {}, b.get("values") or {}
    for name in SUMMARY_NAMES:
        x, y = va.get(name), vb.get(name)
        if x is None or y is None:
            only = x if x is not None else y
            if only is not None:
                values[name] = list(only)
            continue
        avg = (x[0] * na + y[0] * nb) / (na + nb)
        values[name] = [avg, min(x[1], y[1]), max(x[2], y[2])]
    return {
        "minute": a["minute"],
        "samples": min(na + nb, 3600),
        "values": values,
        "net_rx_bytes": (a.get("net_rx_bytes") or 0.0) + (b.get("net_rx_bytes") or 0.0),
        "net_tx_bytes": (a.get("net_tx_bytes") or 0.0) + (b.get("net_tx_bytes") or 0.0),
    }
