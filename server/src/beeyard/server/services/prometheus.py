"""Prometheus text exposition (format 0.0.4) of the fleet's latest live metrics.

Built from the in-memory live state, never the database, so a scrape every few
seconds costs nothing but formatting. Every series carries ``server_id`` and
``name`` labels; the name is escaped as the format requires (backslash, double
quote, newline), since an admin may call a server anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Extract = Callable[[dict[str, Any]], Iterable[tuple[dict[str, str], float]]]


def _one(path: tuple[str, ...]) -> Extract:
    def get(m: dict[str, Any]) -> Iterable[tuple[dict[str, str], float]]:
        value: Any = m
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return []
            value = value[key]
        return [({}, float(value))]
    return get


def _rows(field: str, label: str, key: str, value: str) -> Extract:
    def get(m: dict[str, Any]) -> Iterable[tuple[dict[str, str], float]]:
        return [({label: str(r[key])}, float(r[value])) for r in m.get(field) or []
                if r.get(value) is not None]
    return get


def _load(i: int) -> Extract:
    def get(m: dict[str, Any]) -> Iterable[tuple[dict[str, str], float]]:
        load = m.get("load") or []
        return [({}, float(load[i]))] if len(load) > i else []
    return get


# name, type, help, extractor
METRICS: tuple[tuple[str, str, str, Extract], ...] = (
    ("beeyard_cpu_usage_percent", "gauge", "CPU busy, all cores, percent.", _one(("cpu",))),
    ("beeyard_load1", "gauge", "1-minute load average.", _load(0)),
    ("beeyard_load5", "gauge", "5-minute load average.", _load(1)),
    ("beeyard_load15", "gauge", "15-minute load average.", _load(2)),
    ("beeyard_memory_total_bytes", "gauge", "Physical memory.", _one(("memory", "total"))),
    ("beeyard_memory_used_bytes", "gauge", "Memory in use.", _one(("memory", "used"))),
    ("beeyard_memory_available_bytes", "gauge", "Memory available.",
     _one(("memory", "available"))),
    ("beeyard_swap_total_bytes", "gauge", "Swap size.", _one(("swap", "total"))),
    ("beeyard_swap_used_bytes", "gauge", "Swap in use.", _one(("swap", "used"))),
    ("beeyard_network_receive_bytes_per_second", "gauge", "Receive rate, all interfaces.",
     _one(("net_total", "rx_bps"))),
    ("beeyard_network_transmit_bytes_per_second", "gauge", "Transmit rate, all interfaces.",
     _one(("net_total", "tx_bps"))),
    ("beeyard_network_receive_bytes_total", "counter", "Bytes received, all interfaces.",
     _one(("net_total", "rx_bytes"))),
    ("beeyard_network_transmit_bytes_total", "counter", "Bytes sent, all interfaces.",
     _one(("net_total", "tx_bytes"))),
    ("beeyard_tcp_connections", "gauge", "TCP connections.", _one(("connections", "tcp"))),
    ("beeyard_udp_connections", "gauge", "UDP sockets.", _one(("connections", "udp"))),
    ("beeyard_processes", "gauge", "Processes.", _one(("processes",))),
    ("beeyard_uptime_seconds", "gauge", "Seconds since the host booted.", _one(("uptime",))),
    ("beeyard_filesystem_size_bytes", "gauge", "Filesystem size.",
     _rows("filesystems", "mount", "mount", "size")),
    ("beeyard_filesystem_used_bytes", "gauge", "Filesystem space used.",
     _rows("filesystems", "mount", "mount", "used")),
    ("beeyard_temperature_celsius", "gauge", "Sensor temperature.",
     _rows("temperatures", "sensor", "label", "celsius")),
    ("beeyard_gpu_utilization_percent", "gauge", "GPU utilisation.",
     _rows("gpus", "gpu", "index", "utilization")),
    ("beeyard_gpu_memory_used_bytes", "gauge", "GPU memory in use.",
     _rows("gpus", "gpu", "index", "memory_used")),
)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v) if not v.is_integer() or abs(v) >= 1e15 else str(int(v))


def render(servers: Iterable[dict[str, Any]]) -> str:
    """``servers``: ``{"id", "name", "online": bool, "last_seen": float|None,
    "metrics": dict|None}`` each. Families are grouped, as the format requires."""
    servers = list(servers)
    lines: list[str] = []

    def family(name: str, kind: str, help_: str) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")

    family("beeyard_server_online", "gauge", "1 if the server's agent is connected, else 0.")
    for s in servers:
        base = {"server_id": str(s["id"]), "name": s["name"]}
        lines.append(f"beeyard_server_online{_labels(base)} {1 if s['online'] else 0}")
    family("beeyard_server_last_seen_timestamp_seconds", "gauge",
           "Unix time of the last frame from the server's agent.")
    for s in servers:
        if s.get("last_seen") is not None:
            base = {"server_id": str(s["id"]), "name": s["name"]}
            lines.append(f"beeyard_server_last_seen_timestamp_seconds{_labels(base)} "
                         f"{_value(float(s['last_seen']))}")
    for name, kind, help_, extract in METRICS:
        family(name, kind, help_)
        for s in servers:
            metrics = s.get("metrics")
            if not metrics:
                continue
            base = {"server_id": str(s["id"]), "name": s["name"]}
            for extra, value in extract(metrics):
                lines.append(f"{name}{_labels({**base, **extra})} {_value(value)}")
    return "\n".join(lines) + "\n"
