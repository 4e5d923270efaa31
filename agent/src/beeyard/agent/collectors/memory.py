"""Memory and swap from one read of /proc/meminfo.

psutil's virtual_memory and swap_memory would read the file twice and also
/proc/vmstat (55 + 85 µs measured, against 13 µs here). "Used" memory is
total minus MemAvailable, the kernel's own estimate of what can be had without
swapping; that is also what psutil's ``percent`` means.
"""

from __future__ import annotations

from typing import Any, ClassVar

from beeyard.agent.procfs import ProcFile

_KEYS = ("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapTotal", "SwapFree")
# "\nCached:" so that "SwapCached:" does not match; the file is searched with a "\n" in front
_NEEDLES = tuple((key, b"\n" + key.encode() + b":") for key in _KEYS)


def parse_meminfo(data: bytes) -> dict[str, int]:
    """Bytes of the fields the agent uses (the file says kB, meaning KiB).

    Seven ``find`` calls rather than a multi-line regular expression over the
    whole file: 5 against 17 µs here, since the expression is tried at every
    position of 50-odd lines."""
    data = b"\n" + data
    out: dict[str, int] = {}
    for key, needle in _NEEDLES:
        start = data.find(needle)
        if start >= 0:
            start += len(needle)
            end = data.find(b"\n", start)
            out[key] = int(data[start:end if end >= 0 else None].removesuffix(b" kB")) * 1024
    return out


def memory_metrics(info: dict[str, int]) -> dict[str, Any]:
    total = info.get("MemTotal", 0)
    available = info.get("MemAvailable")
    if available is None:  # kernels before 3.14
        available = info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0)
    available = min(available, total)
    used = total - available
    swap_total = info.get("SwapTotal", 0)
    swap_used = max(0, swap_total - info.get("SwapFree", 0))
    return {
        "memory": {
            "total": float(total), "used": float(used), "available": float(available),
            "percent": 100.0 * used / total if total else 0.0,
        },
        "swap": {
            "total": float(swap_total), "used": float(swap_used),
            "percent": 100.0 * swap_used / swap_total if swap_total else 0.0,
        },
    }


class MemoryCollector:
    name = "memory"
    fallback: ClassVar[dict[str, Any]] = {
        "memory": {"total": 0.0, "used": 0.0, "available": 0.0, "percent": 0.0},
        "swap": {"total": 0.0, "used": 0.0, "percent": 0.0},
    }

    def __init__(self, path: str = "/proc/meminfo") -> None:
        self._file = ProcFile(path)

    def collect(self, metrics: dict[str, Any], now: float) -> None:
        data = self._file.read()
        if data is None:
            raise OSError(f"cannot read {self._file.path}")
        metrics.update(memory_metrics(parse_meminfo(data)))
