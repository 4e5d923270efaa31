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

from beeyard.shared.frames import SUMMARY_NAMES

_LIMIT = 1e18  # the bound of an aggregate value on the wire


def _clamp(value: float) -> float:
    return max(-_LIMIT, min(_LIMIT, value))


_MAX_ROWS = 3600  # a minute's rows; more only if the wall clock stood still


class MinuteAggregator:
    """Feed samples in time order; ``add`` returns a finished minute's summary body.

    A sample adds its row (the SUMMARY_NAMES values) to the minute's list; avg/min/max are worked
    out once, when the minute closes. Updating eighteen running accumulators on
    every sample instead was a loop of dict look-ups and comparisons that, at one
    cold sample a second, cost the agent more than building the tuple."""

    def __init__(self) -> None:
        self._minute: int | None = None
        self._samples = 0
        self._rows: list[tuple[float | None, ...]] = []
        self._rx = 0.0
        self._tx = 0.0

    def add(self, ts: float, row: tuple[float | None, ...], net_rx: float, net_tx: float
            ) -> dict[str, Any] | None:
        """One sample: its time, its SUMMARY_NAMES values (``sampling.row``) and the bytes
        the counted interfaces moved since the previous one."""
        minute = int(ts // 60) * 60  # the wall-clock minute it falls in
        done = self.flush() if self._minute is not None and minute != self._minute else None
        self._minute = minute
        self._samples += 1
        if len(self._rows) < _MAX_ROWS:
            self._rows.append(row)
        self._rx += net_rx
        self._tx += net_tx
        return done

    def flush(self) -> dict[str, Any] | None:
        """The current (possibly partial) minute's summary, and start empty."""
        if self._minute is None or self._samples == 0:
            return None
        values: dict[str, list[float]] = {}
        for name, column in zip(SUMMARY_NAMES, zip(*self._rows, strict=True), strict=True):
            present = [v for v in column if v is not None]
            if present:
                total = 0.0
                for v in present:  # in sample order, as a running sum would add them
                    total += v
                values[name] = [_clamp(total / len(present)), _clamp(min(present)),
                                _clamp(max(present))]
        body = {
            "minute": self._minute,
            "samples": min(self._samples, 3600),
            "values": values,
            "net_rx_bytes": self._rx,
            "net_tx_bytes": self._tx,
        }
        self._minute = None
        self._samples = 0
        self._rows = []
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
