"""The collectors' parsers of /proc and /sys text: fixed samples with known answers, and
this machine's real files checked against an independent reading of the same figures."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from beeyard.agent.collectors import cpu, diskio, load, memory, network, temperatures
from beeyard.agent.procfs import ProcFile

MEMINFO = b"""MemTotal:       24684096 kB
MemFree:        22868900 kB
MemAvailable:   24143568 kB
Buffers:          104140 kB
Cached:          1256576 kB
SwapCached:         1234 kB
Active:           708832 kB
SwapTotal:       2097148 kB
SwapFree:        2000000 kB
HugePages_Total:       0
"""


def test_meminfo_fixed_sample() -> None:
    info = memory.parse_meminfo(MEMINFO)
    assert info == {
        "MemTotal": 24684096 * 1024, "MemFree": 22868900 * 1024,
        "MemAvailable": 24143568 * 1024, "Buffers": 104140 * 1024,
        "Cached": 1256576 * 1024,  # not SwapCached
        "SwapTotal": 2097148 * 1024, "SwapFree": 2000000 * 1024,
    }
    metrics = memory.memory_metrics(info)
    assert metrics["memory"]["used"] == float((24684096 - 24143568) * 1024)
    assert metrics["swap"]["used"] == float(97148 * 1024)
    # a kernel before 3.14 has no MemAvailable: free + buffers + cache
    old = memory.parse_meminfo(MEMINFO.replace(b"MemAvailable:   24143568 kB\n", b""))
    assert "MemAvailable" not in old
    assert memory.memory_metrics(old)["memory"]["available"] == float(
        (22868900 + 104140 + 1256576) * 1024)
    # the last line of a file without a final newline
    assert memory.parse_meminfo(b"MemTotal: 10 kB") == {"MemTotal": 10240}


def test_meminfo_of_this_machine() -> None:
    info = memory.parse_meminfo(Path("/proc/meminfo").read_bytes())
    assert set(info) >= {"MemTotal", "MemFree", "Buffers", "Cached", "SwapTotal", "SwapFree"}
    assert info["MemTotal"] == psutil.virtual_memory().total
    assert info["SwapTotal"] == psutil.swap_memory().total


def test_stat_fixed_sample() -> None:
    text = (b"cpu  10 1 20 300 4 5 6 7 8 9\ncpu0 5 1 10 150 2 2 3 3 4 4\n"
            b"cpu1 5 0 10 150 2 3 3 4 4 5\nintr 123 1 2 3\nctxt 99\ncpu9 1 1 1 1 1 1 1 1\n")
    # guest (8, 9) is inside user already; a "cpu" line after the others is not read
    assert cpu.parse_stat(text) == {b"": (353, 304), b"0": (176, 152), b"1": (177, 152)}


def test_stat_of_this_machine() -> None:
    before = psutil.cpu_times()
    parsed = cpu.parse_stat(Path("/proc/stat").read_bytes())
    after = psutil.cpu_times()
    online = [c for c in parsed if c]
    assert len(online) == len(psutil.cpu_times(percpu=True))
    assert all(name.isdigit() for name in online)
    tick = os.sysconf("SC_CLK_TCK")
    total, idle = parsed[b""]
    assert before.idle + before.iowait - 0.05 <= idle / tick <= after.idle + after.iowait + 0.05
    assert total >= idle > 0


def test_loadavg() -> None:
    assert load.parse_loadavg(b"0.52 10.58 0.00 1/467 12345\n") == [0.52, 10.58, 0.0]
    metrics: dict[str, object] = {}
    load.LoadCollector().collect(metrics, 0.0)
    assert metrics["load"] == pytest.approx(list(os.getloadavg()), abs=0.5)


def test_loadavg_falls_back_to_getloadavg(tmp_path: Path) -> None:
    metrics: dict[str, object] = {}
    load.LoadCollector(str(tmp_path / "missing")).collect(metrics, 0.0)
    assert metrics["load"] == pytest.approx(list(os.getloadavg()), abs=0.5)


NET_DEV = (
    b"Inter-|   Receive                                                |  Transmit\n"
    b" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs"
    b" drop fifo colls carrier compressed\n"
    b"    lo:  123456     100    0    0    0     0          0         0   123456     100"
    b"    0    0    0     0       0          0\n"
    b"  eth0:12345678901234 106342    0    0    0     0          0         0  5988808   59215"
    b"    0    0    0     0       0          0\n"
    b"br-x1: 10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n"
)


def test_net_dev_fixed_sample() -> None:
    # a wide counter leaves no space after the colon; loopback is left out
    assert network.parse_net_dev(NET_DEV) == {
        "eth0": (12345678901234.0, 5988808.0), "br-x1": (10.0, 20.0)}


def test_net_dev_of_this_machine() -> None:
    parsed = network.parse_net_dev(Path("/proc/net/dev").read_bytes())
    counters = psutil.net_io_counters(pernic=True)
    assert set(parsed) == set(counters) - {"lo"}
    for name, (rx, tx) in parsed.items():
        assert rx <= counters[name].bytes_recv + 10_000_000  # read a moment apart
        assert tx <= counters[name].bytes_sent + 10_000_000


def test_block_stat_fixed_sample() -> None:
    line = (b"  372550    48325 12534050   892987  4117061  1410741 261368592  1614206        0"
            b"   471164  2786237  1647895      387 117800016   171702  1879429   107341\n")
    assert diskio.parse_block_stat(line) == (
        12534050 * 512.0, 261368592 * 512.0, 372550.0, 4117061.0)


def test_block_stat_agrees_with_diskstats_on_this_machine() -> None:
    devices, _ = diskio.whole_devices()
    if not devices:
        pytest.skip("no block devices visible")
    for _ in range(5):  # the counters move between the two reads: retry a quiet moment
        from_sys = {name: diskio.parse_block_stat(Path(f"/sys/block/{name}/stat").read_bytes())
                    for name in devices}
        from_proc = diskio.parse_diskstats(Path("/proc/diskstats").read_bytes(), devices)
        if from_sys == from_proc:
            break
        time.sleep(0.05)
    assert from_sys == from_proc


def test_disk_rates_from_sysfs_stat_files(tmp_path: Path) -> None:
    block = tmp_path / "block"
    for name, slaves in (("sda", []), ("dm-0", ["sda"]), ("loop0", [])):
        (block / name / "slaves").mkdir(parents=True)
        for slave in slaves:
            (block / name / "slaves" / slave).touch()

    def write(sda: int, dm: int) -> None:
        for name, n in (("sda", sda), ("dm-0", dm), ("loop0", 5)):
            (block / name / "stat").write_text(
                f"{n} 0 {n * 8} 0 {n * 2} 0 {n * 16} 0 0 0 0 0 0 0 0 0 0\n")

    write(0, 0)
    # no diskstats at all: the per-device files are the source
    collector = diskio.DiskIOCollector(str(tmp_path / "no-diskstats"), str(block))
    collector._counters._at = 0.0
    write(100, 50)
    metrics: dict[str, object] = {}
    collector.collect(metrics, 2.0)
    rows = metrics["disks"]
    assert [r["device"] for r in rows] == ["dm-0", "sda"]  # type: ignore[attr-defined]
    sda = rows[1]  # type: ignore[index]
    assert sda == {"device": "sda", "read_bps": 100 * 8 * 512 / 2, "write_bps": 200 * 8 * 512 / 2,
                   "read_iops": 50.0, "write_iops": 100.0}
    assert metrics["_disk_read_bps"] == 100 * 8 * 512 / 2  # dm-0 sits on sda: counted once


def test_disks_of_this_machine_read_from_sysfs() -> None:
    collector = diskio.DiskIOCollector()
    devices, _ = diskio.whole_devices()
    if devices:
        assert collector._stats is not None
        assert [name for name, _ in collector._stats] == sorted(devices)


def test_celsius() -> None:
    assert temperatures.celsius(b"45000\n") == 45.0
    assert temperatures.celsius(b"-5500\n") == -5.5
    assert temperatures.celsius(b"garbage\n") is None
    assert temperatures.celsius(b"") is None
    assert temperatures.celsius(None) is None
    assert temperatures.celsius(b"2000000\n") is None  # out of any sensor's range


def test_temperatures_are_read_again_from_the_open_files(tmp_path: Path) -> None:
    hwmon = tmp_path / "hwmon" / "hwmon0"
    hwmon.mkdir(parents=True)
    (hwmon / "name").write_text("k10temp\n")
    (hwmon / "temp1_input").write_text("40000\n")
    collector = temperatures.TemperatureCollector(str(tmp_path))
    metrics: dict[str, object] = {}
    collector.collect(metrics, 0.0)
    assert metrics["temperatures"] == [{"label": "k10temp temp1", "celsius": 40.0}]
    (hwmon / "temp1_input").write_text("41500\n")  # rewritten in place, as sysfs "is"
    collector.collect(metrics, 1.0)
    assert metrics["temperatures"] == [{"label": "k10temp temp1", "celsius": 41.5}]


def test_proc_file_stops_after_a_short_read_only_when_that_is_the_end(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    assert ProcFile(big, size=4096).read() == b"x" * 5000  # a full first read: read on
    small = tmp_path / "small"
    small.write_bytes(b"y" * 100)
    assert ProcFile(small).read() == b"y" * 100
    # iterator-backed /proc files read through a kept-open file equal a plain read
    for path in ("/proc/net/dev", "/proc/diskstats", "/proc/self/mounts"):
        with open(path, "rb") as f:
            plain = f.read()
        kept = ProcFile(path).read()
        assert kept is not None
        assert kept.count(b"\n") == plain.count(b"\n")
        assert [line.split()[:3] for line in kept.splitlines()][:2] == \
            [line.split()[:3] for line in plain.splitlines()][:2]
