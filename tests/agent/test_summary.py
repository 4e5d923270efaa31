"""Minute summaries: aggregation per wall-clock minute, merge of a restarted minute."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from beeyard.agent.collectors import Reading
from beeyard.agent.sampling import row
from beeyard.agent.summary import MinuteAggregator, merge
from beeyard.shared import wire
from beeyard.shared.frames import SUMMARY_NAMES

BASE: dict[str, Any] = {
    "cpu": 10.0, "cpu_cores": [10.0], "load": [0.5, 0.4, 0.3],
    "memory": {"total": 1000.0, "used": 400.0, "available": 600.0, "percent": 40.0},
    "swap": {"total": 100.0, "used": 10.0, "percent": 10.0},
    "filesystems": [
        {"mount": "/", "type": "ext4", "device": "/dev/vda", "size": 100.0, "used": 30.0,
         "free": 60.0, "percent": 33.3},
        {"mount": "/data", "type": "xfs", "device": "/dev/vdb", "size": 100.0, "used": 60.0,
         "free": 50.0, "percent": 54.5},
    ],
    "disks": [], "net": [],
    "net_total": {"rx_bps": 100.0, "tx_bps": 50.0, "rx_bytes": 1e6, "tx_bytes": 2e6},
    "connections": {"tcp": 10, "udp": 2}, "processes": 100, "uptime": 5.0,
    "temperatures": [], "gpus": [],
}


Sample = tuple[float, tuple[float | None, ...], float, float]


def reading(ts: float, cpu: float, rx_delta: float = 0.0, gpus: list[dict[str, Any]] | None = None,
            **local: float) -> Sample:
    """MinuteAggregator.add's arguments for one sample, as the Python sampler makes them
    (the row from ``sampling.row``)."""
    metrics = copy.deepcopy(BASE)
    metrics["cpu"] = cpu
    metrics["gpus"] = gpus or []
    extra = {"disk_read_bps": 1.0, "disk_write_bps": 2.0, **local}
    return ts, row(Reading(ts, metrics, extra)), rx_delta, rx_delta / 2


def test_one_summary_per_wall_clock_minute() -> None:
    agg = MinuteAggregator()
    assert agg.add(*reading(1_700_000_040.0, 10.0, 100.0)) is None
    assert agg.add(*reading(1_700_000_070.5, 30.0, 300.0, temperature_max=50.0)) is None
    assert agg.add(*reading(1_700_000_099.9, 20.0, 200.0, temperature_max=70.0)) is None
    done = agg.add(*reading(1_700_000_100.0, 90.0, 1000.0))
    assert done is not None
    assert done["minute"] == 1_700_000_040
    assert done["samples"] == 3
    values = done["values"]
    assert values["cpu"] == [20.0, 10.0, 30.0]
    assert values["load1"] == [0.5, 0.5, 0.5]
    assert values["memory_used"] == [400.0, 400.0, 400.0]
    assert values["disk_used_percent"][0] == pytest.approx(100 * 90 / 200)
    assert values["disk_read_bps"] == [1.0, 1.0, 1.0]
    assert values["tcp"] == [10.0, 10.0, 10.0]
    assert values["temperature_max"] == [60.0, 50.0, 70.0]  # only where a sensor answered
    assert "gpu_utilization" not in values  # no GPU: no value, not zeros
    assert done["net_rx_bytes"] == 600.0 and done["net_tx_bytes"] == 300.0
    frame = wire.decode(wire.encode("summary", done))
    assert frame.body["values"]["cpu"] == [20.0, 10.0, 30.0]
    # the next minute holds only the sample that closed the previous one
    rest = agg.flush()
    assert rest is not None and rest["minute"] == 1_700_000_100 and rest["samples"] == 1
    assert agg.flush() is None


def test_minute_boundaries_and_a_clock_stepped_back() -> None:
    agg = MinuteAggregator()
    assert agg.add(*reading(1_700_000_040.0, 1.0)) is None  # the minute's first instant...
    assert agg.add(*reading(1_700_000_099.999, 2.0)) is None  # ...and its last: one minute
    whole = agg.flush()
    assert whole is not None and whole["minute"] == 1_700_000_040 and whole["samples"] == 2
    agg = MinuteAggregator()
    agg.add(*reading(1_700_000_100.0, 1.0))
    done = agg.add(*reading(1_700_000_050.0, 2.0))  # clock stepped back a minute
    assert done is not None and done["minute"] == 1_700_000_100


def test_every_summary_name_is_produced_when_data_exists() -> None:
    r = reading(1_700_000_040.0, 5.0, temperature_max=40.0, gpus=[
        {"index": 0, "name": "A", "utilization": 50.0, "memory_used": 10.0,
         "memory_total": 100.0},
        {"index": 1, "name": "B", "utilization": 100.0, "memory_used": 30.0,
         "memory_total": 100.0},
    ])
    agg = MinuteAggregator()
    agg.add(*r)
    done = agg.flush()
    assert done is not None
    values = done["values"]
    assert set(values) == set(SUMMARY_NAMES)
    assert values["gpu_utilization"] == [75.0] * 3 and values["gpu_memory_used"] == [40.0] * 3


def test_merge_of_two_parts_of_one_minute() -> None:
    a = {"minute": 60, "samples": 3, "values": {"cpu": [10.0, 5.0, 20.0], "tcp": None},
         "net_rx_bytes": 100.0, "net_tx_bytes": None}
    b = {"minute": 60, "samples": 1, "values": {"cpu": [30.0, 30.0, 30.0],
                                                "tcp": [4.0, 4.0, 4.0]},
         "net_rx_bytes": 50.0, "net_tx_bytes": 7.0}
    merged = merge(a, b)
    assert merged["samples"] == 4
    assert merged["values"]["cpu"] == [15.0, 5.0, 30.0]
    assert merged["values"]["tcp"] == [4.0, 4.0, 4.0]
    assert merged["net_rx_bytes"] == 150.0 and merged["net_tx_bytes"] == 7.0
