"""Load averages over 1, 5 and 15 minutes (one system call)."""

from __future__ import annotations

import os
from typing import Any, ClassVar


class LoadCollector:
    name = "load"
    fallback: ClassVar[dict[str, Any]] = {"load": [0.0, 0.0, 0.0]}

    def collect(self, metrics: dict[str, Any], now: float) -> None:
        metrics["load"] = [max(0.0, v) for v in os.getloadavg()]
