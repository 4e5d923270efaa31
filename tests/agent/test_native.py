"""The C sampler against the Python collectors, value for value, on the same files.

Both read a small /proc and /sys tree written here (so every edge case can be set up:
counters going back, interfaces and CPUs coming and going, stacked disks, sensors
answering garbage), at the same clock readings. Their frames must decode to the same
metrics and their summary rows must be equal, except for what each reads at its own
moment (uptime, and the usage of the real filesystem under the tree). Random and
mangled files must never crash the C code nor make it raise anything but the
``OSError``/``ValueError`` that hands sampling to the Python collectors.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.serverproc import REQUIRE_ALL

from beeyard.agent import websocket
from beeyard.agent.collectors import Paths, default_collectors
from beeyard.agent.sampling import PythonSampler, fall_back, open_sampler
from beeyard.shared import wire

try:
    from beeyard.agent.collectors import _native  # noqa: F401
    from beeyard.agent.collectors.native import NativeSampler
except ImportError as exc:  # not built: fine on a host without a compiler, not in CI
    if REQUIRE_ALL:
        raise RuntimeError(f"the C sampler is not built ({exc}) and BEEYARD_REQUIRE_ALL=1 "
                           "forbids skipping") from exc
    pytest.skip(f"the C sampler is not built: {exc}", allow_module_level=True)


class FakeHost:
    """A /proc and /sys tree whose counters the test moves, written in the kernel's formats."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc = root / "proc"
        self.sys = root / "sys"
        self.cpus: dict[str, list[int]] = {
            "": [4000, 200, 1500, 80000, 600, 0, 90, 50],
            "0": [2000, 100, 700, 40000, 300, 0, 45, 25],
            "1": [2000, 100, 800, 40000, 300, 0, 45, 25],
        }
        self.loadavg = "0.52 0.58 0.59 1/467 12345\n"
        self.meminfo = {"MemTotal": 2048000, "MemFree": 512000, "MemAvailable": 1024000,
                        "Buffers": 20000, "Cached": 300000, "SwapCached": 7,
                        "SwapTotal": 1000000, "SwapFree": 750000}
        self.net: dict[str, tuple[int, int]] = {
            "lo": (999, 999), "eth0": (1_000_000, 500_000), "veth1": (10_000, 20_000),
        }
        self.disks: dict[str, list[int]] = {
            "vda": [100, 0, 8000, 50, 200, 0, 16000, 70, 0, 120, 150],
            "dm-0": [10, 0, 800, 5, 20, 0, 1600, 7, 0, 12, 15],
        }
        self.sockstat = ("sockets: used 45\nTCP: inuse 13 orphan 0 tw 35 alloc 13 mem 96\n"
                         "UDP: inuse 4 mem 0\nUDPLITE: inuse 9\nRAW: inuse 0\n")
        self.sockstat6 = "TCP6: inuse 3\nUDP6: inuse 2\nUDPLITE6: inuse 8\n"
        self.sensors = {"temp1": "45000\n", "temp2": "51500\n"}
        self.mounts_dir = root / "data dir"
        self.mounts_dir.mkdir()
        for d in ("proc/net", "proc/self", "proc/1", "proc/42", "sys/block/vda",
                  "sys/block/dm-0/slaves/vda", "sys/block/loop0", "sys/devices/virtual/net/lo",
                  "sys/devices/virtual/net/veth1", "sys/class/hwmon/hwmon0"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (self.sys / "class/hwmon/hwmon0/name").write_text("k10temp\n")
        (self.sys / "class/hwmon/hwmon0/temp1_label").write_text("Tctl\n")
        (self.sys / "block/loop0/stat").write_text(" ".join(["1"] * 11) + "\n")
        self.write_mounts()
        self.write()

    @property
    def paths(self) -> Paths:
        return Paths(str(self.proc), str(self.sys))

    def write_mounts(self, *extra: str) -> None:
        # a real type on a real directory (statvfs works wherever the tree is), a pseudo
        # filesystem that must be left out, and a mount path written with an octal escape
        escaped = str(self.mounts_dir).replace(" ", "\\040")
        lines = ["proc /proc proc rw 0 0", f"/dev/fake0 {self.root} ext4 rw 0 0",
                 f"/dev/fake1 {escaped} xfs rw 0 0", *extra]
        (self.proc / "self/mounts").write_text("\n".join(lines) + "\n")

    def write(self) -> None:
        cpu = "".join(f"cpu{name} {' '.join(map(str, v))} 0 0\n" for name, v in self.cpus.items())
        (self.proc / "stat").write_text(cpu + "intr 123 4 5 6\nctxt 99\nbtime 1700000000\n")
        (self.proc / "loadavg").write_text(self.loadavg)
        (self.proc / "meminfo").write_text(
            "".join(f"{k}:{v:>16} kB\n" for k, v in self.meminfo.items()))
        head = ("Inter-|   Receive                                                |  Transmit\n"
                " face |bytes    packets errs drop fifo frame compressed multicast|bytes    "
                "packets errs drop fifo colls carrier compressed\n")
        rows = "".join(f"{name:>6}: {rx} 1 0 0 0 0 0 0 {tx} 2 0 0 0 0 0 0\n"
                       for name, (rx, tx) in self.net.items())
        (self.proc / "net/dev").write_text(head + rows)
        (self.proc / "net/sockstat").write_text(self.sockstat)
        (self.proc / "net/sockstat6").write_text(self.sockstat6)
        for name, fields in self.disks.items():
            (self.sys / "block" / name).mkdir(parents=True, exist_ok=True)
            (self.sys / "block" / name / "stat").write_text(
                " ".join(f"{v:>8}" for v in fields) + "\n")
        for stem, value in self.sensors.items():
            (self.sys / "class/hwmon/hwmon0" / f"{stem}_input").write_text(value)


Summary = dict[str, Any] | None


def metrics(frame: bytes, ts: float) -> dict[str, Any]:
    decoded = msgpack.unpackb(frame)
    assert set(decoded) == {"t", "b"} and decoded["t"] == "sample"
    assert decoded["b"]["ts"] == ts
    return decoded["b"]["metrics"]  # type: ignore[no-any-return]


def assert_same(native: tuple[bytes, Summary], python: tuple[bytes, Summary],
                ts: float) -> dict[str, Any]:
    """Equal but for what each reads at its own moment; returns the native metrics."""
    a, b = metrics(native[0], ts), metrics(python[0], ts)
    assert list(a) == list(b)  # the same keys in the same order
    # the C sampler's uptime is that of the sample's ts; the Python one reads the clock again
    assert a.pop("uptime") == max(0.0, ts - psutil.boot_time())
    assert abs(b.pop("uptime") - (time.time() - psutil.boot_time())) < 5
    for fs in (a["filesystems"], b["filesystems"]):
        for row in fs:  # a real filesystem: usage may move between the two statvfs calls
            for key in ("used", "free", "percent", "inodes_used"):
                row.pop(key, None)
    assert a == b
    assert_same_summary(native[1], python[1])
    assert wire.decode(native[0]).type == "sample"
    return metrics(native[0], ts)


def assert_same_summary(native: Summary, python: Summary) -> None:
    if native is None or python is None:
        assert native is None and python is None
        return
    a, b = dict(native), dict(python)
    va, vb = dict(a.pop("values")), dict(b.pop("values"))
    assert a == b
    assert list(va) == list(vb)
    # the disk's used percent comes from a real filesystem, as above
    da, db = va.pop("disk_used_percent", None), vb.pop("disk_used_percent", None)
    assert (da is None) == (db is None)
    if da is not None and db is not None:
        assert da == pytest.approx(db, abs=0.5)
    assert va == vb
    assert wire.decode(wire.encode("summary", native)).type == "summary"


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


@pytest.fixture
def pair(host: FakeHost) -> Iterator[tuple[NativeSampler, PythonSampler]]:
    native = NativeSampler(host.paths)
    python = PythonSampler(default_collectors(host.paths))
    yield native, python
    native.close()


def both(pair: tuple[NativeSampler, PythonSampler], ts: float, now: float) -> dict[str, Any]:
    native, python = pair
    return assert_same(native.sample(None, ts, now), python.sample(None, ts, now), ts)


def test_the_same_values_as_the_python_collectors(host: FakeHost, pair: Any) -> None:
    t0 = time.monotonic()
    first = both(pair, 1_700_000_000.0, t0 + 1)
    assert first["cpu_cores"] == [0.0, 0.0]  # nothing moved since the first reading
    assert [f["mount"] for f in first["filesystems"]] == [str(host.root), str(host.mounts_dir)]
    assert [d["device"] for d in first["disks"]] == ["dm-0", "vda"]  # loop0 left out
    assert [n["iface"] for n in first["net"]] == ["eth0", "veth1"]  # lo left out
    assert first["connections"] == {"tcp": 13 + 3 + 35, "udp": 4 + 2}
    assert first["temperatures"] == [{"label": "k10temp Tctl", "celsius": 45.0},
                                     {"label": "k10temp temp2", "celsius": 51.5}]
    assert first["memory"]["used"] == (2048000 - 1024000) * 1024.0

    # one second: every counter moves
    for name, v in host.cpus.items():
        host.cpus[name] = [v[0] + 30, v[1], v[2] + 20, v[3] + 40, v[4] + 10, *v[5:]]
    host.net["eth0"] = (1_250_000, 600_000)
    host.net["veth1"] = (15_000, 21_000)
    host.disks["vda"][2] += 4096
    host.disks["vda"][6] += 8192
    host.disks["vda"][0] += 7
    host.disks["dm-0"][2] += 2048
    host.loadavg = "1.25 0.75 0.50 2/470 12350\n"
    host.meminfo["MemAvailable"] = 900000
    host.sensors["temp1"] = "47250\n"
    host.write()
    moved = both(pair, 1_700_000_001.0, t0 + 2)
    assert moved["cpu"] == 50.0  # 100 ticks, 50 of them idle or iowait
    assert moved["net_total"]["rx_bps"] == 250_000.0  # eth0 only: veth1 is virtual
    vda = next(d for d in moved["disks"] if d["device"] == "vda")
    assert vda["read_bps"] == 4096 * 512.0 and vda["read_iops"] == 7.0
    still = both(pair, 1_700_000_001.5, t0 + 2.5)  # nothing moved: zero rates
    assert still["net_total"]["rx_bps"] == 0.0

    # counters going back, an interface gone and one new, a CPU offline, garbage sensor
    host.cpus.pop("1")
    host.net.pop("veth1")
    host.net["eth0"] = (100, 700_000)
    host.net["wlan0"] = (5, 6)
    host.disks["vda"][2] -= 100
    host.sensors["temp2"] = "EIO\n"
    host.sockstat6 = ""
    host.write()
    odd = both(pair, 1_700_000_002.0, t0 + 3)
    assert len(odd["cpu_cores"]) == 1
    assert [n["iface"] for n in odd["net"]] == ["eth0", "wlan0"]
    assert odd["net"][0]["rx_bps"] == 0.0 and odd["net"][0]["tx_bps"] == 100_000 / 0.5
    assert [t["label"] for t in odd["temperatures"]] == ["k10temp Tctl"]

    # no time passed: zero rates, not a division by zero
    same_time = both(pair, 1_700_000_002.0, t0 + 3)
    assert same_time["net_total"]["tx_bps"] == 0.0

    # a minute later the disks are listed again (a new one), five and ten minutes later
    # the mounts and the sensors
    host.disks["vdb"] = [1] * 11
    host.write()
    later = both(pair, 1_700_000_100.0, t0 + 100)
    assert [d["device"] for d in later["disks"]] == ["dm-0", "vda", "vdb"]
    (host.root / "more").mkdir()
    host.write_mounts(f"/dev/fake2 {host.root / 'more'} btrfs rw 0 0")
    host.sensors["temp3"] = "30000\n"
    host.write()
    much_later = both(pair, 1_700_001_000.0, t0 + 1000)
    assert len(much_later["filesystems"]) == 3
    assert len(much_later["temperatures"]) == 2  # temp2 still answers garbage


def test_the_minute_summaries_are_the_same(host: FakeHost, pair: Any) -> None:
    """Seven samples in one minute (values moving, a sensor coming and going), then the
    next minute: both summaries hold the same averages, minima and maxima."""
    native, python = pair
    t0 = time.monotonic()
    minute = 1_800_000_000.0 - 1_800_000_000.0 % 60
    for k in range(7):
        host.net["eth0"] = (1_000_000 + k * k * 1000, 500_000 + k * 10)
        host.cpus[""][0] += 17 * k
        host.cpus[""][3] += 100 - 17 * k
        host.sensors["temp1"] = f"{40000 + 1500 * k}\n" if k % 3 else "EIO\n"
        host.sensors["temp2"] = "EIO\n"
        host.meminfo["MemAvailable"] = 1024000 - k * 4096
        host.write()
        both(pair, minute + 8 * k + 0.5, t0 + 1 + k)
    host.write()
    ts = minute + 61
    done_a = native.sample(None, ts, t0 + 9)[1]
    done_b = python.sample(None, ts, t0 + 9)[1]
    assert done_a is not None and done_a["minute"] == minute and done_a["samples"] == 7
    assert done_a["values"]["temperature_max"][1:] == [41.5, 47.5]  # k = 1, 2, 4, 5
    assert "gpu_utilization" not in done_a["values"]
    assert_same_summary(done_a, done_b)
    assert_same_summary(native.flush(), python.flush())  # the new minute, one sample
    assert native.flush() is None


def test_the_summary_counts_physical_devices_only(host: FakeHost, pair: Any) -> None:
    """dm-0 sits on vda (it has a slave): its I/O is vda's again and is not added."""
    t0 = time.monotonic()
    both(pair, 1_700_000_000.0, t0 + 1)
    host.disks["vda"][2] += 10
    host.disks["dm-0"][2] += 10
    host.write()
    both(pair, 1_700_000_001.0, t0 + 2)
    native, python = pair
    summary = native.flush()
    assert summary is not None and summary["values"]["disk_read_bps"][2] == 10 * 512.0
    assert_same_summary(summary, python.flush())


def test_the_live_frame_comes_masked_and_ready_to_send(host: FakeHost, pair: Any) -> None:
    native, python = pair
    keys = set()
    for sampler in (native, python) * 3:
        frame, _ = sampler.sample(True, 1_700_000_000.0, time.monotonic())
        assert frame[0] == 0x82 and frame[1] & 0x80  # final binary frame, masked
        length, start = frame[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(frame[2:4], "big"), 4
        key = frame[start:start + 4]
        keys.add(key)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(frame[start + 4:]))
        assert len(payload) == length
        assert websocket.binary_frame(payload, key) == frame
        assert len(metrics(payload, 1_700_000_000.0)) == 13
    assert len(keys) == 6  # a fresh key each time


def test_an_unreadable_source_hands_sampling_to_the_python_collectors(
        host: FakeHost, caplog: pytest.LogCaptureFixture) -> None:
    """What the daemon does when the C sampler raises (daemon.Agent._fall_back): the
    Python collectors take over, also on the /proc/stat that broke the C parser, and the
    C sampler's part of the minute is kept."""
    sampler = open_sampler(host.paths)
    assert isinstance(sampler, NativeSampler)
    sampler.sample()
    (host.proc / "stat").write_text("cpu  this is not a number\n")
    with pytest.raises(ValueError, match="unexpected content in /proc/stat") as failed:
        sampler.sample()
    with caplog.at_level(logging.WARNING, "beeyard.agent.sampling"):
        python = fall_back(sampler, str(failed.value), host.paths)
    assert "sampling with the Python collectors from now on" in caplog.text
    data, _ = python.sample()  # /proc/stat still garbage: its keys fall back
    assert wire.decode(data).body["metrics"]["cpu"] == 0.0
    host.write()
    data, _ = python.sample()
    assert wire.decode(data).type == "sample"
    summary = python.flush()  # the C sampler's sample and the Python ones: one minute
    assert summary is not None and summary["samples"] == 3


def test_a_host_without_sysfs_disk_stats_is_sampled_in_python(host: FakeHost) -> None:
    os.chmod(host.sys / "block/vda/stat", 0)
    if os.access(host.sys / "block/vda/stat", os.R_OK):  # root reads it anyway
        (host.sys / "block/vda/stat").unlink()
        (host.sys / "block/vda/stat").mkdir()
    with pytest.raises(OSError, match="stat file"):
        NativeSampler(host.paths)
    assert isinstance(open_sampler(host.paths), PythonSampler)


_SOURCES = ("proc/stat", "proc/loadavg", "proc/meminfo", "proc/net/dev", "proc/net/sockstat",
            "proc/net/sockstat6", "sys/block/vda/stat", "sys/class/hwmon/hwmon0/temp1_input")


def _mangle(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    for at, cut, insert in edits:
        at %= len(data) + 1
        data = data[:at] + insert + data[at + cut:]
    return data


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.sampled_from(_SOURCES),
       edits=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 40),
                                st.binary(max_size=24) | st.sampled_from(
                                    [b"\n", b" ", b":", b"-", b"99999999999999999999999", b"\0",
                                     b"cpu", b"\nTCP: inuse ", b" kB", b"\t"])),
                      max_size=6),
       noise=st.binary(max_size=600), replace=st.booleans())
def test_mangled_files_never_crash_the_c_sampler(host: FakeHost, source: str,
                                                 edits: list[tuple[int, int, bytes]],
                                                 noise: bytes, replace: bool) -> None:
    path = host.root / source
    original = path.read_bytes()
    native = NativeSampler(host.paths)
    try:
        path.write_bytes(noise if replace else _mangle(original, edits))
        for step in range(2):
            ts = 1_700_000_000.0 + 60 * step
            try:
                frame, summary = native.sample(None, ts, time.monotonic())
            except (OSError, ValueError):
                continue  # the hand-over to the Python collectors
            assert len(metrics(frame, ts)) == 13
            assert summary is None or summary["samples"] >= 1
    finally:
        native.close()
        path.write_bytes(original)


async def test_the_daemon_goes_on_with_the_python_collectors(
        host: FakeHost, tmp_path: Path) -> None:
    """Agent.tick with the C sampler on the fake host: when it raises, the daemon swaps
    in the Python sampler, which carries on the C sampler's minute, so the minute is
    summarised once and whole."""
    from beeyard.agent import config
    from beeyard.agent.daemon import Agent
    from beeyard.agent.spool import Spool

    cfg = config.parse({"server": "http://127.0.0.1:1", "server_id": 1, "token_file": "token",
                        "spool": {"dir": str(tmp_path / "spool")}}, tmp_path)
    spool = Spool(tmp_path / "spool")
    agent = Agent(cfg, {}, spool)
    while time.time() % 60 > 57:  # the three ticks below must fall in one minute
        time.sleep(0.5)
    agent.sampler.close()
    agent.sampler = NativeSampler(host.paths)
    agent.tick()
    agent.tick()
    assert len(spool) == 0
    (host.proc / "stat").write_text("cpu  this is not a number\n")
    agent.tick()
    assert isinstance(agent.sampler, PythonSampler)
    assert len(spool) == 0  # nothing sent mid-minute: the server keeps a minute's first
    host.write()
    agent.tick()
    summary = agent.sampler.flush()
    assert summary is not None and summary["samples"] == 3  # two from C, one from Python


def test_a_carried_minute_goes_out_alone_when_the_next_one_has_begun(host: FakeHost) -> None:
    native = NativeSampler(host.paths)
    t0 = time.monotonic()
    native.sample(False, 1_800_000_030.0, t0)
    python = fall_back(native, "a test", host.paths)
    _, done = python.sample(False, 1_800_000_075.0, t0 + 1)  # the next minute already
    assert done is not None and done["minute"] == 1_800_000_000 and done["samples"] == 1
    _, done = python.sample(False, 1_800_000_140.0, t0 + 2)
    assert done is not None and done["minute"] == 1_800_000_060 and done["samples"] == 1


def test_sampling_and_replanning_do_not_leak(host: FakeHost) -> None:
    """Thousands of samples, minute summaries and re-plans (new filesystem, disk and
    sensor lists each time) leave the process's resident memory where it was."""
    native = NativeSampler(host.paths)

    def resident() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def run(n: int, start: float) -> None:
        for k in range(n):
            now = start + k
            if k % 50 == 0:
                native._mounts._read_at = float("-inf")  # re-read, and re-give, every list
                native._disks_at = native._sensors_at = float("-inf")
            frame, summary = native.sample(k % 2 == 0, 1_700_000_000.0 + 7 * k, now)
            assert frame and (summary is None or summary["samples"] >= 1)

    try:
        t0 = time.monotonic()
        run(1000, t0)  # warm: buffers grown, allocator pools filled
        before = resident()
        run(3000, t0 + 1000)
        grown = resident() - before
    finally:
        native.close()
    assert grown < 1_000_000, f"resident memory grew by {grown} bytes over 3,000 samples"


_ASAN_DRIVER = r"""
import os, random, sys, time
sys.path.insert(0, sys.argv[1])
import _native
from beeyard.shared.frames import SUMMARY_NAMES

root, seed, rounds = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
sources = [os.path.join(root, p) for p in sys.argv[5].split(",")]


def fd(path, flags=os.O_RDONLY):
    return os.open(os.path.join(root, path), flags)


sampler = _native.Sampler(
    fd("proc/stat"), fd("proc/loadavg"), fd("proc/meminfo"), fd("proc/net/dev"),
    fd("proc/net/sockstat"), fd("proc/net/sockstat6"),
    fd("sys/devices/virtual/net", os.O_RDONLY | os.O_DIRECTORY),
    fd("proc", os.O_RDONLY | os.O_DIRECTORY), 1.0e9, time.monotonic(), SUMMARY_NAMES)
sampler.set_process_offset(3)
sampler.set_filesystems([(b"\xa5mount\xa1/", root.encode())])
sampler.set_disks([(b"vda", b"\xa6device\xa3vda", fd("sys/block/vda/stat"), True)],
                  time.monotonic())
sampler.set_sensors([(b"\xa5label\xa1t", fd("sys/class/hwmon/hwmon0/temp1_input"))])
originals = {p: open(p, "rb").read() for p in sources}
pieces = [b"\n", b" ", b"\t", b":", b"-", b"9" * 25, b"\0", b"cpu", b"cpu9", b"\nTCP: inuse ",
          b" tw ", b" kB", b"MemTotal:", b"eth0:", b"\n" + b"n" * 300 + b": 1 2 3 4 5 6 7 8 9\n",
          b"\ncpu65535 1 2 3 4 5 6 7 8\n", b"x" * 5000]
failures = 0
for i in range(rounds):
    path = rng.choice(sources)
    data = bytearray(originals[path])
    if rng.random() < 0.05:
        data = bytearray(rng.randbytes(rng.randint(0, 9000)))
    for _ in range(rng.randint(1, 8)):
        at = rng.randint(0, len(data))
        op = rng.random()
        if op < 0.3:
            del data[at:at + rng.randint(1, 40)]
        elif op < 0.7:
            data[at:at] = rng.choice(pieces) if rng.random() < 0.7 else rng.randbytes(30)
        else:
            data[at:at + 1] = rng.randbytes(1)
    with open(path, "wb") as f:
        f.write(data)
    try:
        sampler.sample(1.7e9 + 13 * i, time.monotonic() + i, -1 if i % 2 else 7, i % 3 == 0)
    except (OSError, ValueError):
        failures += 1
    with open(path, "wb") as f:
        f.write(originals[path])
sampler.flush()
print("rounds", rounds, "refused", failures)
"""


def test_the_c_sampler_under_addresssanitizer(host: FakeHost, tmp_path: Path) -> None:
    """The C sampler built with AddressSanitizer and UBSan, fed 3,000 mangled /proc and
    /sys files: any read or write outside a buffer, use after free or undefined
    behaviour aborts the process and fails this test."""
    import shutil
    import subprocess
    import sys
    import sysconfig

    compiler = shutil.which("cc") or shutil.which("gcc")
    runtime = ""
    if compiler is not None:
        runtime = subprocess.run([compiler, "-print-file-name=libasan.so"], capture_output=True,
                                 text=True, check=False).stdout.strip()
    if compiler is None or not os.path.isabs(runtime) or not os.path.exists(runtime):
        if REQUIRE_ALL:
            pytest.fail("no C compiler with AddressSanitizer, and BEEYARD_REQUIRE_ALL=1 "
                        "forbids skipping")
        pytest.skip("no C compiler with AddressSanitizer")
    source = Path(__file__).resolve().parents[2] / "agent/src/beeyard/agent/collectors/_native.c"
    build = tmp_path / "asan"
    build.mkdir()
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    subprocess.run([compiler, "-O1", "-g", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-shared", "-fPIC",
                    f"-I{sysconfig.get_paths()['include']}", str(source),
                    "-o", str(build / f"_native{suffix}")], check=True)
    env = {**os.environ, "LD_PRELOAD": runtime, "PYTHONMALLOC": "malloc",
           "ASAN_OPTIONS": "detect_leaks=0:exitcode=99",
           "UBSAN_OPTIONS": "print_stacktrace=1"}
    sources = ",".join(s for s in _SOURCES)
    done = subprocess.run([sys.executable, "-c", _ASAN_DRIVER, str(build), str(host.root), "7",
                           "3000", sources], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.startswith("rounds 3000 refused ")
    refused = int(done.stdout.split()[-1])
    assert 0 < refused < 3000  # mangled files were refused, and intact ones sampled
