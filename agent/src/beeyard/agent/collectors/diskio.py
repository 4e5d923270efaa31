"""Disk I/O rates per whole block device, from /sys/block/X/stat (else /proc/diskstats).

Only whole devices (the names in /sys/block) are reported, not partitions,
whose I/O is already inside their disk's. Loop, ram and zram devices are left
out (their "I/O" is files or memory). Stacked devices (dm-*, md*) are reported
per device, but the host total that goes into the minute summary counts only
devices that sit on no other device (no entries in /sys/block/X/slaves), so a
write through LVM is not counted twice.

Each reported device's own ``stat`` file is kept open and re-read: the
kernel then sums the per-CPU counters of those devices only, where
/proc/diskstats does it for every block device and partition (a dozen loop
devices on a host with snaps): 12 against 48 µs measured here at one read a
second, for one disk and eight loop devices. /proc/diskstats remains the
source when a device has no readable ``stat`` file (an unusual /sys).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, ClassVar

from beeyard.agent.collectors.rates import Counters
from beeyard.agent.procfs import ProcFile

_SECTOR = 512  # /proc/diskstats counts 512-byte sectors whatever the device's own size
_SKIP = ("loop", "ram", "zram", "fd")
_REFRESH = 60.0


def parse_diskstats(data: bytes, devices: set[str]) -> dict[str, tuple[float, ...]]:
    """{device: (read bytes, write bytes, reads, writes)} for ``devices``.

    Fields: major minor name reads merged sectors-read ms writes merged
    sectors-written ... Split per line rather than matched by a multi-line
    regular expression: half the cost (4 against 9 µs here)."""
    out: dict[str, tuple[float, ...]] = {}
    for line in data.split(b"\n"):
        fields = line.split(None, 10)
        if len(fields) > 9:
            name = fields[2].decode("utf-8", "replace")
            if name in devices:
                out[name] = (float(int(fields[5]) * _SECTOR), float(int(fields[9]) * _SECTOR),
                             float(fields[3]), float(fields[7]))
    return out


def parse_block_stat(data: bytes) -> tuple[float, ...]:
    """(read bytes, write bytes, reads, writes) from /sys/block/X/stat, whose fields
    are those of /proc/diskstats after the name: reads merged sectors-read ms writes
    merged sectors-written ..."""
    fields = data.split(None, 8)
    return (float(int(fields[2]) * _SECTOR), float(int(fields[6]) * _SECTOR),
            float(fields[0]), float(fields[4]))


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


def open_stats(sys_block: str, devices: set[str]) -> list[tuple[str, ProcFile]] | None:
    """Each device's ``stat`` file, open, in name order; None when any cannot be read
    (then /proc/diskstats is the source)."""
    stats = [(name, ProcFile(os.path.join(sys_block, name, "stat"), size=512))
             for name in sorted(devices)[:1024]]
    if all(file.read() for _, file in stats):
        return stats
    for _, file in stats:
        file.close()
    return None


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
        # (device, its stat file) in name order; None: read /proc/diskstats instead
        self._stats: list[tuple[str, ProcFile]] | None = None
        self._listed_at = float("-inf")
        self._counters = Counters()
        with contextlib.suppress(OSError, ValueError, IndexError):  # as CpuCollector's
            self._read(time.monotonic())

    def _list(self) -> None:
        """Find the devices again (a disk added or removed), and their stat files."""
        self._devices, self._physical = whole_devices(self._sys_block)
        for _, old in self._stats or ():
            old.close()
        self._stats = open_stats(self._sys_block, self._devices)

    def _read(self, now: float) -> dict[str, list[float]]:
        """Rates per device, in name order."""
        if now - self._listed_at >= _REFRESH:
            self._list()
            self._listed_at = now
        if self._stats is not None:
            current: dict[str, tuple[float, ...]] = {}
            for name, file in self._stats:
                data = file.read()
                if data:  # None: the device went away since it was listed
                    current[name] = parse_block_stat(data)
            return self._counters.update(now, current)
        data = self._file.read()
        if data is None:
            raise OSError(f"cannot read {self._file.path}")
        counters = parse_diskstats(data, self._devices)
        return self._counters.update(now, {name: counters[name] for name in sorted(counters)})

    def collect(self, metrics: dict[str, Any], now: float) -> None:
        rows: list[dict[str, Any]] = []
        total_read = total_write = 0.0
        physical = self._physical
        for name, (read_bps, write_bps, read_iops, write_iops) in self._read(now).items():
            if len(rows) == 1024:
                break
            rows.append({"device": name[:255], "read_bps": read_bps, "write_bps": write_bps,
                         "read_iops": read_iops, "write_iops": write_iops})
            if name in physical:
                total_read += read_bps
                total_write += write_bps
        metrics["disks"] = rows
        metrics["_disk_read_bps"] = total_read
        metrics["_disk_write_bps"] = total_write
