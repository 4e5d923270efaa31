"""NVIDIA GPUs through NVML (``pip install beeyard-agent[gpu]``), when a driver is present.

Optional on two levels: without the ``nvidia-ml-py`` package, or without an
NVIDIA driver (NVML fails to initialise), or with no GPU, ``create`` returns
None and the sample simply has no GPU rows. The import happens only here, so
hosts without GPUs never load it.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

log = logging.getLogger("beeyard.agent.collectors.gpu")


class GpuCollector:
    name = "gpus"
    fallback: ClassVar[dict[str, Any]] = {"gpus": []}

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self._nvml = nvml
        self._handles = handles
        self._names: list[str] = []
        for index, handle in enumerate(handles):
            try:
                name = nvml.nvmlDeviceGetName(handle)
            except Exception:  # NVML raises its own NVMLError family
                name = f"GPU {index}"
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            self._names.append(str(name)[:255])

    @classmethod
    def create(cls) -> GpuCollector | None:
        try:
            import pynvml  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            count = int(pynvml.nvmlDeviceGetCount())
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(min(count, 64))]
        except Exception as exc:  # no driver, no device, old driver: no GPU fields
            log.info("no NVIDIA GPU metrics: %s", exc)
            return None
        if not handles:
            return None
        log.info("collecting metrics of %d NVIDIA GPU(s)", len(handles))
        return cls(pynvml, handles)

    def collect(self, metrics: dict[str, Any], now: float) -> None:
        nvml = self._nvml
        rows = []
        for index, handle in enumerate(self._handles):
            try:
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:  # a GPU fallen off the bus: leave it out of this sample
                log.debug("GPU %d unreadable: %s", index, exc)
                continue
            try:
                temperature: float | None = float(
                    nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
            except Exception:
                temperature = None
            row: dict[str, Any] = {
                "index": index, "name": self._names[index],
                "utilization": float(min(100, max(0, util.gpu))),
                "memory_used": float(memory.used), "memory_total": float(memory.total),
            }
            if temperature is not None and -273.15 <= temperature <= 1000:
                row["temperature"] = temperature
            rows.append(row)
        metrics["gpus"] = rows
