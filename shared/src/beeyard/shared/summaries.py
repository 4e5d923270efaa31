"""The scalars of one live sample that minute summaries, rollups and charts are made of.

Computed from a sample as it travels (``metrics`` of a ``sample`` frame): the
server keeps them in its live ring and shows them in the fleet overview. The
agent computes the same quantities for its minute summaries from its own
uncapped readings (``agent/summary.py``: all disks and sensors, where a sample
carries at most a bounded number of rows), so the live tier and the stored
tiers chart the same thing.
"""

from __future__ import annotations

from typing import Any

from beeyard.shared.frames import SUMMARY_NAMES

__all__ = ["SUMMARY_NAMES", "scalars"]


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The ``SUMMARY_NAMES`` values of a sample's ``metrics``; a name the sample has no
    data for (no filesystems, no sensors, no GPU) is left out rather than made up.

    Lenient about missing sections, so that a partial sample (a collector that failed
    this second) still gives what it can.
    """
    out: dict[str, float] = {}
    cpu = metrics.get("cpu")
    if cpu is not None:
        out["cpu"] = float(cpu)
    load = metrics.get("load")
    if load:
        out["load1"], out["load5"], out["load15"] = (float(x) for x in load[:3])
    memory = metrics.get("memory")
    if memory:
        out["memory_used"] = float(memory["used"])
        out["memory_percent"] = float(memory["percent"])
    swap = metrics.get("swap")
    if swap:
        out["swap_used"] = float(swap["used"])
    fs = metrics.get("filesystems")
    if fs:
        used = sum(f["used"] for f in fs)
        room = used + sum(f["free"] for f in fs)
        if room > 0:
            out["disk_used_percent"] = 100.0 * used / room
    disks = metrics.get("disks")
    if disks:
        out["disk_read_bps"] = float(sum(d["read_bps"] for d in disks))
        out["disk_write_bps"] = float(sum(d["write_bps"] for d in disks))
    net = metrics.get("net_total")
    if net:
        out["net_rx_bps"] = float(net["rx_bps"])
        out["net_tx_bps"] = float(net["tx_bps"])
    connections = metrics.get("connections")
    if connections:
        out["tcp"] = float(connections["tcp"])
        out["udp"] = float(connections["udp"])
    processes = metrics.get("processes")
    if processes is not None:
        out["processes"] = float(processes)
    temps = metrics.get("temperatures")
    if temps:
        out["temperature_max"] = float(max(t["celsius"] for t in temps))
    gpus = metrics.get("gpus")
    if gpus:
        out["gpu_utilization"] = sum(g["utilization"] for g in gpus) / len(gpus)
        out["gpu_memory_used"] = float(sum(g["memory_used"] for g in gpus))
    return out


def record_scalars(m: Any) -> dict[str, float]:
    """``scalars`` of a sample's metrics as the server's compiled decoder hands them over
    (``native``: a record, read by attribute). The same values as ``scalars`` gives for
    the equivalent dict (a property test holds them equal); on the server's hot path,
    where reading a record like a dict, twenty lookups a sample, was ~5 % of its CPU at
    10,000 agents. Every field is present on a record: the declared ones are required or
    have a default (empty lists)."""
    out: dict[str, float] = {"cpu": float(m.cpu)}
    load = m.load
    if load:
        out["load1"], out["load5"], out["load15"] = float(load[0]), float(load[1]), float(load[2])
    memory = m.memory
    out["memory_used"] = float(memory.used)
    out["memory_percent"] = float(memory.percent)
    out["swap_used"] = float(m.swap.used)
    fs = m.filesystems
    if fs:
        used = free = 0.0
        for f in fs:
            used += f.used
            free += f.free
        if used + free > 0:
            out["disk_used_percent"] = 100.0 * used / (used + free)
    disks = m.disks
    if disks:
        read = write = 0.0
        for d in disks:
            read += d.read_bps
            write += d.write_bps
        out["disk_read_bps"] = read
        out["disk_write_bps"] = write
    net = m.net_total
    out["net_rx_bps"] = float(net.rx_bps)
    out["net_tx_bps"] = float(net.tx_bps)
    connections = m.connections
    out["tcp"] = float(connections.tcp)
    out["udp"] = float(connections.udp)
    out["processes"] = float(m.processes)
    temps = m.temperatures
    if temps:
        out["temperature_max"] = float(max(t.celsius for t in temps))
    gpus = m.gpus
    if gpus:
        out["gpu_utilization"] = sum(g.utilization for g in gpus) / len(gpus)
        out["gpu_memory_used"] = float(sum(g.memory_used for g in gpus))
    return out
