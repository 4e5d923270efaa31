"""Disk I/O rates per whole block device, from /proc/diskstats.

Only whole devices (the names in /sys/block) are reported, not partitions,
whose I/O is already inside their disk's. Loop, ram and zram devices are left
out (their "I/O" is files or memory). Stacked devices (dm-*, md*) are reported
per device, but the host total that goes into the minute summary counts only
devices that sit on no other device (no entries in /sys/block/X/slaves), so a
write through LVM is not counted twice.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, ClassVar

from beeyard.agent.collectors.rates import Counters
from beeyard.agent.procfs import ProcFile

_SECTOR = 512  # /proc/diskstats counts 512-byte sectors whatever the device's own size
_SKIP = ("loop", "ram", "zram", "fd")
_REFRESH = 60.0


# major minor name: reads, merged, sectors read, ms, writes, merged, sectors written
_LINE = re.compile(rb"^\s*\d+\s+\d+\s+(\S+) (\d+) \d+ (\d+) \d+ (\d+) \d+ (\d+)", re.M)


def parse_diskstats(data: bytes, devices: set[str]) -> dict[str, tuple[float, ...]]:
    """{device: (read bytes, write bytes, reads, writes)} for ``devices``."""
    out: dict[str, tuple[float, ...]] = {}
    for raw, reads, read_sectors, writes, write_sectors in _LINE.findall(data):
        name = raw.decode("utf-8", "replace")
        if name in devices:
            out[name] = (float(int(read_sectors) * _SECTOR), float(int(write_sectors) * _SECTOR),
                         float(reads), float(writes))
    return out


def whole_devices(sys_block: str = "/sys/block") -> tuple[set[str], set[str]]:
    """(devices to report, devices to count in the host total)."""
    try:
        names = os.listdir(sys_block)
    except OSError:
        return set(), set()
    report = {n for n in names if not n.startswith(_SKIP)}
    physical = set()
    for name in report:
        try:
            stacked = bool(os.listdir(os.path.join(sys_block, name, "slaves")))
        except OSError:
            stacked = False
        if not stacked:
            physical.add(name)
    return report, physical


class DiskIOCollector:
    name = "disks"
    fallback: ClassVar[dict[str, Any]] = {
        "disks": [], "_disk_read_bps": 0.0, "_disk_write_bps": 0.0,
    }

    def __init__(self, path: str = "/proc/diskstats", sys_block: str = "/sys/block") -> None:
        self._file = ProcFile(path)
        self._sys_block = sys_block
        self._devices: set[str] = set()
        self._physical: set[str] = set()
        self._listed_at = float("-inf")
        self._counters = Counters()
        self._read(time.monotonic())

    def _read(self, now: float) -> dict[str, list[float]]:
        if now - self._listed_at >= _REFRESH:
            self._devices, self._physical = whole_devices(self._sys_block)
            self._listed_at = now
        data = self._file.read()
        if data is None:
            raise OSError(f"cannot read {self._file.path}")
        return self._counters.update(now, parse_diskstats(data, self._devices))

    def collect(self, metrics: dict[str, Any], now: float) -> None:
        rates = self._read(now)
        rows = []
        total_read = total_write = 0.0
        for name in sorted(rates)[:1024]:
            read_bps, write_bps, read_iops, write_iops = rates[name]
            rows.append({"device": name[:255], "read_bps": read_bps, "write_bps": write_bps,
                         "read_iops": read_iops, "write_iops": write_iops})
            if name in self._physical:
                total_read += read_bps
                total_write += write_bps
        metrics["disks"] = rows
        metrics["_disk_read_bps"] = total_read
        metrics["_disk_write_bps"] = total_write
