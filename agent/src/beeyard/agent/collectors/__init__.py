"""Collectors: one small, independent reader per kind of metric, behind one interface.

Modelled on Prometheus node_exporter: each collector owns its source (a /proc
file, statvfs, sysfs, NVML), its previous reading for rates, and the keys it
writes into a sample's ``metrics`` map. The ``Sampler`` runs them in order and
keeps one failing collector from spoiling the sample: its keys fall back to
empty values and the failure is logged once, not every second.

Rates are computed from the deltas between two consecutive readings over the
monotonic clock (``rates``); each rate collector takes its first reading when
built, so the first sample already carries real rates.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar, NamedTuple, Protocol

log = logging.getLogger("beeyard.agent.collectors")


class Collector(Protocol):
    """Writes its keys into ``metrics``. ``now`` is ``time.monotonic()`` for rates.
    ``fallback`` holds the keys' values to use when ``collect`` raises."""

    name: str
    fallback: ClassVar[dict[str, Any]]

    def collect(self, metrics: dict[str, Any], now: float) -> None: ...


class Paths(NamedTuple):
    """Where the collectors read the host: /proc and /sys, or a copy of them in tests,
    so that the Python collectors and the C sampler can be fed the same files."""

    proc: str = "/proc"
    sys: str = "/sys"


HOST = Paths()  # this host's own


def default_collectors(paths: Paths = HOST) -> list[Collector]:
    """Every collector this host supports. Imports stay here so a caller that only
    needs host facts does not pay for them."""
    from beeyard.agent.collectors import (
        connections,
        cpu,
        diskio,
        filesystems,
        gpu,
        load,
        memory,
        network,
        processes,
        temperatures,
    )

    proc, sys = paths
    found: list[Collector] = [
        cpu.CpuCollector(f"{proc}/stat"),
        load.LoadCollector(f"{proc}/loadavg"),
        memory.MemoryCollector(f"{proc}/meminfo"),
        filesystems.FilesystemCollector(f"{proc}/self/mounts"),
        diskio.DiskIOCollector(f"{proc}/diskstats", f"{sys}/block"),
        network.NetworkCollector(f"{proc}/net/dev", f"{sys}/devices/virtual/net"),
        connections.ConnectionsCollector(f"{proc}/net"),
        processes.ProcessesCollector(proc),
        processes.UptimeCollector(),
        temperatures.TemperatureCollector(f"{sys}/class"),
    ]
    nvidia = gpu.GpuCollector.create()
    if nvidia is not None:
        found.append(nvidia)
    return found


class Reading(NamedTuple):
    """One sample: ``metrics`` as the ``sample`` frame carries it, and ``local``:
    figures only the agent's own minute summary needs (collectors write them
    under keys starting with ``_``, e.g. the disk total over physical devices)."""

    ts: float
    metrics: dict[str, Any]
    local: dict[str, float]


class Sampler:
    """Runs the collectors into one ``metrics`` map that the ``sample`` frame accepts."""

    def __init__(self, collectors: list[Collector] | None = None) -> None:
        self.collectors = default_collectors() if collectors is None else collectors
        self._failing: set[str] = set()

    def sample(self, ts: float | None = None, now: float | None = None) -> Reading:
        """``ts``, ``now``: the wall and monotonic clocks, read here unless given (tests)."""
        ts = time.time() if ts is None else ts
        now = time.monotonic() if now is None else now
        metrics: dict[str, Any] = {}
        for collector in self.collectors:
            try:
                collector.collect(metrics, now)
            except Exception as exc:  # a collector bug or an odd host must not stop sampling
                if collector.name not in self._failing:
                    self._failing.add(collector.name)
                    log.warning("collector %s failed: %s: %s (further failures not logged)",
                                collector.name, type(exc).__name__, exc)
                for key, value in collector.fallback.items():
                    metrics[key] = _copy(value)
        local = {}
        for key in tuple(metrics):  # a plain loop: two comprehensions cost more, cold
            if key.startswith("_"):
                local[key[1:]] = metrics.pop(key)
        return Reading(ts, metrics, local)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
