"""Load averages over 1, 5 and 15 minutes, from /proc/loadavg kept open.

``os.getloadavg`` is glibc's, which opens, reads and closes /proc/loadavg on
every call; re-reading the open file with one ``pread`` gives the same three
figures (the kernel prints them with two decimals either way) for one system
call instead of three. Where the file cannot be read, ``getloadavg`` it is.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from beeyard.agent.procfs import ProcFile


def parse_loadavg(data: bytes) -> list[float]:
    """[1, 5, 15 minutes] from "0.52 0.58 0.59 1/467 12345"."""
    one, five, fifteen = data.split(None, 3)[:3]
    return [float(one), float(five), float(fifteen)]


class LoadCollector:
    name = "load"
    fallback: ClassVar[dict[str, Any]] = {"load": [0.0, 0.0, 0.0]}

    def __init__(self, path: str = "/proc/loadavg") -> None:
        self._file = ProcFile(path, size=256)

    def collect(self, metrics: dict[str, Any], now: float) -> None:
        data = self._file.read()
        # the file's figures are printed unsigned; getloadavg's are clamped like before
        metrics["load"] = (parse_loadavg(data) if data
                           else [max(0.0, v) for v in os.getloadavg()])
