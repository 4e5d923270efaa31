"""Temperatures from hwmon sensors (thermal zones when there are none).

psutil.sensors_temperatures walks and globs the whole of /sys/class/hwmon on
every call (130 µs here on a machine with no sensors at all, far more with
many). The sensors of a host do not change while it runs, so this collector
finds their files once (and again every ten minutes) and then only reads the
``temp*_input`` values each sample, each from a file kept open (``ProcFile``:
sysfs, like /proc, regenerates an attribute on a read from offset 0). A host
without sensors (most VMs) yields an empty list, which is not an error.
"""

from __future__ import annotations

import glob
import os
from typing import Any, ClassVar, NamedTuple

from beeyard.agent.procfs import ProcFile, read_text

_REDISCOVER = 600.0


class Sensor(NamedTuple):
    label: str
    path: str


def _read_line(path: str) -> str:
    return (read_text(path) or "").strip()


def discover(root: str = "/sys/class") -> list[Sensor]:
    sensors: list[Sensor] = []
    for hwmon in sorted(glob.glob(os.path.join(root, "hwmon", "hwmon*"))):
        base = hwmon if glob.glob(os.path.join(hwmon, "temp*_input")) else os.path.join(
            hwmon, "device")
        chip = _read_line(os.path.join(hwmon, "name")) or _read_line(
            os.path.join(base, "name")) or os.path.basename(hwmon)
        inputs = glob.glob(os.path.join(base, "temp*_input"))
        for path in sorted(inputs, key=lambda p: (len(p), p)):
            stem = os.path.basename(path)[: -len("_input")]
            label = _read_line(os.path.join(base, f"{stem}_label")) or stem
            sensors.append(Sensor(f"{chip} {label}"[:255], path))
    if sensors:
        return sensors
    for zone in sorted(glob.glob(os.path.join(root, "thermal", "thermal_zone*"))):
        kind = _read_line(os.path.join(zone, "type")) or os.path.basename(zone)
        sensors.append(Sensor(kind[:255], os.path.join(zone, "temp")))
    return sensors


def celsius(data: bytes | None) -> float | None:
    """Degrees from a millidegree reading such as b"45000\\n"."""
    try:
        value = int(data or b"") / 1000.0
    except ValueError:
        return None  # some sensors answer EIO or garbage while idle
    return value if -273.15 <= value <= 1000 else None


class TemperatureCollector:
    name = "temperatures"
    fallback: ClassVar[dict[str, Any]] = {"temperatures": []}

    def __init__(self, root: str = "/sys/class") -> None:
        self._root = root
        self._sensors: list[tuple[str, ProcFile]] = []
        self._found_at = float("-inf")

    def _discover(self) -> None:
        for _, old in self._sensors:
            old.close()
        self._sensors = [(s.label, ProcFile(s.path, size=64))
                         for s in discover(self._root)[:256]]

    def collect(self, metrics: dict[str, Any], now: float) -> None:
        if now - self._found_at >= _REDISCOVER:
            self._discover()
            self._found_at = now
        rows = []
        hottest: float | None = None
        for label, file in self._sensors:
            value = celsius(file.read())
            if value is not None:
                rows.append({"label": label, "celsius": value})
                if hottest is None or value > hottest:
                    hottest = value
        metrics["temperatures"] = rows
        if hottest is not None:
            metrics["_temperature_max"] = hottest
