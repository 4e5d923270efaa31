"""The agent's sampler: the C one where it is built and this host suits it, else the
Python collectors, which give the same values for about twice the CPU.

Either one, once a sample interval, ``sample(framed)`` returns the ``sample``
frame (a masked WebSocket frame ready to send, or bare msgpack) and the summary
of the minute that sample closed, if it closed one; ``flush()`` returns the
partial minute at shutdown. The C sampler (``collectors.native``) is used
when its extension module was built at install time and the host has no NVIDIA
GPU (GPU metrics come through NVML's Python binding). If it fails (an unexpected
/proc, a device whose stat file vanished, a frame failing the schema check),
``fall_back`` says why and the agent samples with the Python collectors from then
on: they have a fallback for every odd case.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import msgpack

from beeyard.agent import websocket
from beeyard.agent.collectors import HOST, Paths, Reading, Sampler, default_collectors
from beeyard.agent.summary import MinuteAggregator, merge

log = logging.getLogger("beeyard.agent.sampling")

# One packer for the process: ``msgpack.packb`` builds a new Packer on every call.
_packer = msgpack.Packer(use_bin_type=True)


class HostSampler(Protocol):
    def sample(self, framed: bool = False, ts: float | None = None,
               now: float | None = None) -> tuple[bytes, dict[str, Any] | None]: ...

    def flush(self) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


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
    """The collectors' reading, summarised by ``MinuteAggregator`` and packed without
    the schema check (the daemon checks one sample a minute: ``daemon.CHECK_EVERY``)."""

    def __init__(self, collectors: list[Any] | None = None,
                 carry: dict[str, Any] | None = None) -> None:
        """``carry``: the summary so far of a minute another sampler began (``fall_back``),
        merged into this one's summary of that minute, so that the minute goes out once
        and whole (the server keeps the first summary of a minute it is sent)."""
        self.sampler = Sampler(collectors)
        self.aggregator = MinuteAggregator()
        self._carry = carry

    def sample(self, framed: bool = False, ts: float | None = None,
               now: float | None = None) -> tuple[bytes, dict[str, Any] | None]:
        reading = self.sampler.sample(ts, now)
        local = reading.local
        done = self.aggregator.add(reading.ts, row(reading), local.get("net_rx_delta", 0.0),
                                   local.get("net_tx_delta", 0.0))
        carry = self._carry
        if carry is not None and (done is not None
                                  or int(reading.ts // 60) * 60 != carry["minute"]):
            done = self._with_carry(done)
        data = _packer.pack({"t": "sample", "b": {"ts": reading.ts, "metrics": reading.metrics}})
        return (websocket.binary_frame(data) if framed else data), done

    def _with_carry(self, done: dict[str, Any] | None) -> dict[str, Any] | None:
        carry, self._carry = self._carry, None
        if carry is None or done is None:
            return carry or done
        if done["minute"] == carry["minute"]:
            return merge(carry, done)
        self._carry = carry  # another minute (a clock step): the carried one goes out next
        return done

    def flush(self) -> dict[str, Any] | None:
        return self._with_carry(self.aggregator.flush())

    def close(self) -> None:
        pass


def open_sampler(paths: Paths = HOST) -> HostSampler:
    """The C sampler where it serves this host, else the Python one (and why, at info)."""
    from beeyard.agent.collectors import gpu

    try:
        from beeyard.agent.collectors.native import NativeSampler

        if gpu.GpuCollector.create() is not None:
            log.info("sampling with the Python collectors: GPU metrics need them")
        else:
            return NativeSampler(paths)
    except ImportError as exc:
        log.info("sampling with the Python collectors: the C sampler is not built (%s)", exc)
    except (OSError, ValueError) as exc:
        log.info("sampling with the Python collectors: the C sampler cannot read this host: %s",
                 exc)
    return PythonSampler(default_collectors(paths))


def fall_back(failed: HostSampler, reason: str, paths: Paths = HOST) -> PythonSampler:
    """The Python sampler to go on with, carrying the failed one's minute so far."""
    log.warning("the C sampler stopped (%s); sampling with the Python collectors from now on",
                reason)
    collectors = default_collectors(paths)
    python = PythonSampler(collectors, carry=failed.flush())
    failed.close()
    return python
