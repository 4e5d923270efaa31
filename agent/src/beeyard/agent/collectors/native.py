"""The C sampler's Python half: the rare decisions, and the call each second.

``_native.Sampler`` (``_native.c``) does each second's reads, parsing, rates,
packing, framing and the minute summary in one call, because in Python that work
alone costs more CPU than the agent's budget (docs/benchmarks.md). What changes
rarely stays here and reuses the Python collectors' own code: which filesystems
(``MountWatch``), disks (``whole_devices``, ``open_stats``) and sensors
(``discover``) to read, each row's packed name, and the constants behind the
process count (the link count of /proc, see ``processes``) and the uptime (the
boot time). Every file descriptor the C code reads is opened and closed here,
and a replaced one is closed only after the C side has been given the new list.

``NativeSampler`` raises ``OSError`` or ``ValueError`` from its constructor or
``sample`` when this host needs something only the Python collectors do (no
``/sys/block/X/stat`` to read, an unreadable sockstat, a /proc it cannot parse);
``beeyard.agent.sampling`` then samples with those instead.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import msgpack

from beeyard.agent.collectors import (
    HOST,
    Paths,
    diskio,
    filesystems,
    processes,
    temperatures,
)
from beeyard.agent.procfs import ProcFile
from beeyard.shared.frames import SUMMARY_NAMES

_DISKS_EVERY = 60.0  # as DiskIOCollector
_SENSORS_EVERY = 600.0  # as TemperatureCollector
_PLAN_EVERY = filesystems._POLL_EVERY  # the most often anything above is due


def _packed(**fields: str) -> bytes:
    """Keys and values packed one after another: the start of a row's map, which the
    C code completes with its numbers."""
    return b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in fields.items())


class NativeSampler:
    def __init__(self, paths: Paths = HOST) -> None:
        from beeyard.agent.collectors import _native  # ImportError: not built here

        proc, sys = paths
        self._files = [ProcFile(f"{proc}/stat"), ProcFile(f"{proc}/loadavg", size=256),
                       ProcFile(f"{proc}/meminfo"), ProcFile(f"{proc}/net/dev"),
                       ProcFile(f"{proc}/net/sockstat"), ProcFile(f"{proc}/net/sockstat6")]
        fds = [file.fileno() for file in self._files]
        self._virtual_net = self._proc_fd = -1
        self._disks: list[tuple[str, ProcFile]] = []
        self._sensors: list[ProcFile] = []
        self._stale: list[ProcFile] = []
        self._mounts = filesystems.MountWatch(f"{proc}/self/mounts")
        try:
            for file, fd in zip(self._files[:5], fds, strict=False):  # sockstat6: IPv6 may be off
                if fd < 0:
                    raise OSError(f"cannot open {file.path}")
            with contextlib.suppress(OSError):  # no such directory: every interface is physical
                self._virtual_net = os.open(f"{sys}/devices/virtual/net",
                                            os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            now = time.monotonic()
            self._processes = processes.ProcessesCollector(proc)
            self._proc_fd = self._processes.fileno()
            self._c = _native.Sampler(fds[0], fds[1], fds[2], fds[3], fds[4], fds[5],
                                      self._virtual_net, self._proc_fd,
                                      processes.UptimeCollector().boot, now, SUMMARY_NAMES)
            self._proc = proc
            self._offset: int | None = None
            self._sys_block = f"{sys}/block"
            self._sys_class = f"{sys}/class"
            self._disks_at = self._sensors_at = float("-inf")
            self._plan_at = float("-inf")
            self._plan(now, first=True)
        except BaseException:
            self.close()
            raise

    def _plan(self, now: float, first: bool = False) -> None:
        """Tell the C side what to read, where that may have changed. Asked every
        ``filesystems._POLL_EVERY`` seconds, not every sample: each Python step here
        costs several microseconds once a second, cold."""
        self._plan_at = now
        offset = self._processes.offset(now)
        if offset != self._offset or first:
            self._offset = offset
            self._c.set_process_offset(offset)
        if self._mounts.refresh(now):
            self._c.set_filesystems([
                (_packed(mount=m.mount[:4096], type=m.type[:64], device=m.device[:4096]),
                 os.fsencode(m.mount))
                for m in self._mounts.mounts])
        if now - self._disks_at >= _DISKS_EVERY:
            self._disks_at = now
            report, physical = diskio.whole_devices(self._sys_block)
            stats = diskio.open_stats(self._sys_block, report)
            if stats is None:
                raise OSError(f"a device's stat file under {self._sys_block} cannot be read")
            # the old files stay open until the C side has the new list (close() closes
            # both lists if setting it fails)
            self._stale, self._disks = [f for _, f in self._disks], stats
            self._c.set_disks([(name.encode(), _packed(device=name[:255]), file.fileno(),
                                name in physical) for name, file in stats],
                              now if first else None)
            self._close_stale()
        if now - self._sensors_at >= _SENSORS_EVERY:
            self._sensors_at = now
            found = [(s.label, ProcFile(s.path, size=64))
                     for s in temperatures.discover(self._sys_class)[:256]]
            self._stale, self._sensors = self._sensors, [file for _, file in found]
            self._c.set_sensors([(_packed(label=label), file.fileno())
                                 for label, file in found if file.fileno() >= 0])
            self._close_stale()

    def _close_stale(self) -> None:
        for file in self._stale:
            file.close()
        self._stale = []

    def sample(self, framed: bool = False, ts: float | None = None,
               now: float | None = None) -> tuple[bytes, dict[str, Any] | None]:
        """(the sample: a masked WebSocket frame ready to send if ``framed``, else bare
        msgpack; the summary of the minute this sample closed, or None). ``ts``, ``now``:
        the wall and monotonic clocks, read here unless given (the wall clock in C)."""
        if now is None:
            now = time.monotonic()
        if now - self._plan_at >= _PLAN_EVERY or now < self._plan_at:
            self._plan(now)
        listed = -1 if self._offset is not None else processes.count_listing(self._proc)
        return self._c.sample(ts, now, listed, framed)

    def flush(self) -> dict[str, Any] | None:
        """The current, possibly partial, minute's summary (at shutdown)."""
        return self._c.flush()

    def close(self) -> None:
        """Close every file. The C side goes first: it must never read a descriptor
        number that is closed, and perhaps reused, below."""
        self.__dict__.pop("_c", None)
        for file in self._files + [f for _, f in self._disks] + self._sensors + self._stale:
            file.close()
        self._disks, self._sensors, self._stale = [], [], []
        for fd in (self._virtual_net, self._proc_fd):
            if fd >= 0:
                os.close(fd)
        self._virtual_net = self._proc_fd = -1
        self._mounts.close()
