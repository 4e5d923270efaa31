"""The agent's sampler: the C one where it is built and this host suits it, else the
Python collectors, which give the same values for about twice the CPU.

Both produce a ``Sample``: the packed ``sample`` frame and the minute summary's
row. The C sampler (``collectors.native``) is used when its extension module
was built at install time and the host has no NVIDIA GPU (GPU metrics come
through NVML's Python binding). If it ever fails (an unexpected /proc, a
device whose stat file vanished, or a frame that fails the schema check) the
agent says why and samples with the Python collectors from then on: they have a
fallback for every odd case, and one sample is skipped so that their first
rates span a whole interval.
"""

from __future__ import annotations

import logging
from typing import Any

import msgpack

from beeyard.agent.collectors import HOST, Paths, Reading, Sample, Sampler, default_collectors

log = logging.getLogger("beeyard.agent.sampling")

# One packer for the process: ``msgpack.packb`` builds a new Packer on every call.
_packer = msgpack.Packer(use_bin_type=True)


def row(reading: Reading) -> tuple[float | None, ...]:
    """The SUMMARY_NAMES values of one reading, in that order; None where a name has no
    data (no filesystem, no sensor, no GPU)."""
    m = reading.metrics
    local = reading.local
    load = m["load"]
    memory = m["memory"]
    net = m["net_total"]
    connections = m["connections"]
    disk = None
    fs = m.get("filesystems")
    if fs:
        used = free = 0.0
        for f in fs:
            used += f["used"]
            free += f["free"]
        if used + free > 0:
            disk = 100.0 * used / (used + free)
    gpu_utilization = gpu_memory = None
    gpus = m.get("gpus")
    if gpus:
        gpu_utilization = sum(g["utilization"] for g in gpus) / len(gpus)
        gpu_memory = sum(g["memory_used"] for g in gpus)
    return (
        m["cpu"], load[0], load[1], load[2], memory["used"], memory["percent"],
        m["swap"]["used"], disk, local.get("disk_read_bps"), local.get("disk_write_bps"),
        net["rx_bps"], net["tx_bps"], float(connections["tcp"]), float(connections["udp"]),
        float(m["processes"]), local.get("temperature_max"), gpu_utilization, gpu_memory,
    )


class PythonSampler:
    """The collectors' reading, packed without the schema check (the daemon checks one
    sample a minute: see ``daemon.CHECK_EVERY``)."""

    def __init__(self, collectors: list[Any] | None = None) -> None:
        self.sampler = Sampler(collectors)

    def sample(self, ts: float | None = None, now: float | None = None) -> Sample:
        reading = self.sampler.sample(ts, now)
        frame = _packer.pack({"t": "sample", "b": {"ts": reading.ts, "metrics": reading.metrics}})
        local = reading.local
        return Sample(reading.ts, frame, row(reading), local.get("net_rx_delta", 0.0),
                      local.get("net_tx_delta", 0.0))

    def close(self) -> None:
        pass


def open_native(paths: Paths = HOST) -> Any | None:
    """The C sampler, or None (and why, at info level) where it cannot serve this host."""
    from beeyard.agent.collectors import gpu

    try:
        from beeyard.agent.collectors.native import NativeSampler

        if gpu.GpuCollector.create() is not None:
            log.info("sampling with the Python collectors: GPU metrics need them")
            return None
        return NativeSampler(paths)
    except ImportError as exc:
        log.info("sampling with the Python collectors: the C sampler is not built (%s)", exc)
    except (OSError, ValueError) as exc:
        log.info("sampling with the Python collectors: the C sampler cannot read this host: %s",
                 exc)
    return None


class Sampling:
    """The C sampler while it serves, then the Python collectors for good."""

    def __init__(self, paths: Paths = HOST, native: bool = True) -> None:
        self.paths = paths
        self.current: Any = open_native(paths) if native else None
        self.native = self.current is not None
        if self.current is None:
            self.current = PythonSampler(default_collectors(paths))

    def sample(self) -> Sample | None:
        """This interval's sample; None once, when the C sampler has just given up."""
        if not self.native:
            return self.current.sample()  # type: ignore[no-any-return]
        try:
            return self.current.sample()  # type: ignore[no-any-return]
        except (OSError, ValueError) as exc:
            self.give_up(str(exc))
            return None

    def give_up(self, reason: str) -> None:
        """Stop using the C sampler (``reason`` is logged); no-op on the Python one."""
        if not self.native:
            return
        log.warning("the C sampler stopped (%s); sampling with the Python collectors "
                    "from now on", reason)
        python = PythonSampler(default_collectors(self.paths))
        self.current.close()
        self.current = python
        self.native = False
