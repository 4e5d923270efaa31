"""Collectors against this machine's real /proc and /sys, and against small real
file trees for what this machine lacks (sensors, stacked disks)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pytest

from beeyard.agent import hostfacts
from beeyard.agent.collectors import (
    Reading,
    Sampler,
    connections,
    cpu,
    diskio,
    filesystems,
    network,
    processes,
    rates,
    temperatures,
)
from beeyard.agent.collectors.gpu import GpuCollector
from beeyard.agent.procfs import ProcFile
from beeyard.shared import wire


@pytest.fixture(scope="module")
def reading() -> Reading:
    sampler = Sampler()
    time.sleep(0.3)
    return sampler.sample()


def test_a_real_sample_is_schema_valid(reading: Reading) -> None:
    frame = wire.decode(wire.encode("sample", {"ts": reading.ts, "metrics": reading.metrics}))
    assert frame.type == "sample"
    assert abs(reading.ts - time.time()) < 60


def test_real_values_are_in_bounds(reading: Reading) -> None:
    m = reading.metrics
    assert 0 <= m["cpu"] <= 100
    assert len(m["cpu_cores"]) == psutil.cpu_count()
    assert all(0 <= c <= 100 for c in m["cpu_cores"])
    assert len(m["load"]) == 3 and all(v >= 0 for v in m["load"])
    mem = psutil.virtual_memory()
    assert m["memory"]["total"] == mem.total
    assert 0 < m["memory"]["used"] < m["memory"]["total"]
    assert abs(m["memory"]["percent"] - mem.percent) < 10
    assert m["swap"]["total"] == psutil.swap_memory().total
    assert m["processes"] > 1
    assert abs(m["uptime"] - (time.time() - psutil.boot_time())) < 5
    assert isinstance(m["temperatures"], list)
    assert "gpus" not in m or m["gpus"] == []  # no NVIDIA driver on this machine
    assert all(r["iface"] != "lo" for r in m["net"])
    assert m["net_total"]["rx_bytes"] >= 0
    assert m["connections"]["tcp"] >= 0 and m["connections"]["udp"] >= 0
    assert set(reading.local) >= {"disk_read_bps", "disk_write_bps", "net_rx_delta",
                                  "net_tx_delta"}


def test_root_filesystem_is_reported_and_pseudo_ones_are_not(reading: Reading) -> None:
    rows = reading.metrics["filesystems"]
    mounts = {r["mount"]: r for r in rows}
    assert "/" in mounts
    root = mounts["/"]
    usage = psutil.disk_usage("/")
    assert root["size"] == usage.total
    assert abs(root["percent"] - usage.percent) < 1
    assert root["used"] + root["free"] <= root["size"]
    for row in rows:
        assert row["type"] not in filesystems.PSEUDO_TYPES
        assert not row["mount"].startswith(("/proc", "/sys"))


def test_disk_rows_are_whole_devices(reading: Reading) -> None:
    names = {r["device"] for r in reading.metrics["disks"]}
    assert names <= set(os.listdir("/sys/block"))
    assert not any(n.startswith(("loop", "ram", "zram")) for n in names)


def test_cpu_matches_the_kernel_counters_over_an_interval() -> None:
    """A busy loop in this process shows up in the total CPU of the next reading."""
    collector = cpu.CpuCollector()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        pass
    metrics: dict[str, object] = {}
    collector.collect(metrics, time.monotonic())
    assert metrics["cpu"] >= 100 / (psutil.cpu_count() or 1) * 0.5  # type: ignore[operator]


def test_cpu_rates_from_two_readings() -> None:
    first = cpu.parse_stat(
        b"cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\n"
        b"cpu1 50 0 50 400 0 0 0 0 0 0\nintr 1 2 3\n")
    second = cpu.parse_stat(
        b"cpu  250 0 100 850 0 0 0 0 0 0\ncpu0 150 0 50 400 0 0 0 0 0 0\n"
        b"cpu1 100 0 50 450 0 0 0 0 0 0\nintr 1 2 3\n")
    assert cpu.busy_percent(first[b""], second[b""]) == 75.0  # 150 busy of 200
    assert cpu.busy_percent(first[b"0"], second[b"0"]) == 100.0
    assert cpu.busy_percent(first[b"1"], second[b"1"]) == 50.0
    assert cpu.busy_percent(second[b""], second[b""]) == 0.0  # no time passed


def test_counter_rates_and_resets() -> None:
    counters = rates.Counters()
    assert counters.update(10.0, {"eth0": (1000.0, 0.0)}) == {"eth0": [0.0, 0.0]}
    assert counters.update(12.0, {"eth0": (5000.0, 10.0)}) == {"eth0": [2000.0, 5.0]}
    # wrapped or reset counter: zero for that interval, not a negative or huge rate
    assert counters.update(13.0, {"eth0": (10.0, 20.0)}) == {"eth0": [0.0, 10.0]}
    assert counters.update(14.0, {"eth1": (99.0, 99.0)}) == {"eth1": [0.0, 0.0]}
    assert rates.rate(None, 5.0, 1.0) == 0.0
    assert rates.rate(1.0, 5.0, 0.0) == 0.0


def test_network_rates_and_host_total_from_two_readings(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    virtual = tmp_path / "virtual"
    (virtual / "docker0").mkdir(parents=True)
    header = "Inter-|   Receive  |  Transmit\n face |bytes packets|bytes packets\n"

    def write(eth0: tuple[int, int], docker0: tuple[int, int]) -> None:
        rows = [("lo", (5, 5)), ("eth0", eth0), ("docker0", docker0)]
        dev.write_text(header + "".join(
            f"{name:>6}: {rx} 1 0 0 0 0 0 0 {tx} 1 0 0 0 0 0 0\n" for name, (rx, tx) in rows))

    write((1000, 2000), (0, 0))
    collector = network.NetworkCollector(str(dev), str(virtual))
    write((4000, 2500), (700, 900))
    metrics: dict[str, object] = {}
    collector._at = 0.0  # the first reading was "at" 0 s
    collector.collect(metrics, 2.0)
    rows = {r["iface"]: r for r in metrics["net"]}  # type: ignore[attr-defined]
    assert set(rows) == {"eth0", "docker0"}
    assert rows["eth0"]["rx_bps"] == 1500.0 and rows["eth0"]["tx_bps"] == 250.0
    assert rows["docker0"]["rx_bytes"] == 700.0
    # the host total counts the physical interface only
    assert metrics["net_total"] == {"rx_bps": 1500.0, "tx_bps": 250.0,
                                    "rx_bytes": 4000.0, "tx_bytes": 2500.0}
    assert metrics["_net_rx_delta"] == 3000.0 and metrics["_net_tx_delta"] == 500.0
    # a counter that went back (a reset) gives 0 for that interval, not a negative rate;
    # the other counter still moves
    write((10, 3500), (800, 900))
    collector.collect(metrics, 4.0)
    rows = {r["iface"]: r for r in metrics["net"]}  # type: ignore[attr-defined]
    assert rows["eth0"]["rx_bps"] == 0.0 and rows["eth0"]["tx_bps"] == 500.0
    assert metrics["_net_rx_delta"] == 0.0 and metrics["_net_tx_delta"] == 1000.0
    # no time passed: no rates at all
    collector.collect(metrics, 4.0)
    assert metrics["net_total"]["rx_bps"] == metrics["net_total"]["tx_bps"] == 0.0  # type: ignore[index]


def test_network_without_physical_interfaces_sums_all(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    virtual = tmp_path / "virtual"
    (virtual / "veth0").mkdir(parents=True)
    dev.write_text("h\nh\n veth0: 10 1 0 0 0 0 0 0 20 1 0 0 0 0 0 0\n")
    metrics: dict[str, object] = {}
    network.NetworkCollector(str(dev), str(virtual)).collect(metrics, time.monotonic())
    assert metrics["net_total"]["rx_bytes"] == 10.0  # type: ignore[index]


def test_disk_rates_count_stacked_devices_once(tmp_path: Path) -> None:
    block = tmp_path / "block"
    for name, slaves in (("sda", []), ("dm-0", ["sda"]), ("loop0", [])):
        (block / name / "slaves").mkdir(parents=True)
        for slave in slaves:
            (block / name / "slaves" / slave).touch()
    stats = tmp_path / "diskstats"

    def write(sda: int, dm: int) -> None:
        stats.write_text(
            f"   8       0 sda {sda} 0 {sda * 8} 0 {sda} 0 {sda * 8} 0 0 0 0 0 0 0 0\n"
            f"   8       1 sda1 {sda} 0 {sda * 8} 0 {sda} 0 {sda * 8} 0 0 0 0 0 0 0 0\n"
            f" 253       0 dm-0 {dm} 0 {dm * 8} 0 {dm} 0 {dm * 8} 0 0 0 0 0 0 0 0\n"
            "   7       0 loop0 5 0 5 0 5 0 5 0 0 0 0 0 0 0 0\n")

    write(0, 0)
    collector = diskio.DiskIOCollector(str(stats), str(block))
    collector._counters._at = 0.0
    write(100, 100)
    metrics: dict[str, object] = {}
    collector.collect(metrics, 1.0)
    rows = {r["device"]: r for r in metrics["disks"]}  # type: ignore[attr-defined]
    assert set(rows) == {"sda", "dm-0"}  # no partition, no loop device
    assert rows["sda"]["read_bps"] == 100 * 8 * 512
    assert rows["sda"]["read_iops"] == 100.0
    assert metrics["_disk_read_bps"] == 100 * 8 * 512  # dm-0 sits on sda: counted once


def _mounts(*lines: str) -> list[filesystems.Mount]:
    return filesystems.parse_mounts("\n".join(lines))


def test_filesystem_filtering() -> None:
    mounts = _mounts(
        "/dev/vda1 / ext4 rw 0 0",
        "proc /proc proc rw 0 0",
        "sysfs /sys sysfs rw 0 0",
        "tmpfs /run tmpfs rw 0 0",
        "devtmpfs /dev devtmpfs rw 0 0",
        "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0",
        "overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0",
        "/dev/loop3 /snap/core/1 squashfs ro 0 0",
        "server:/export /mnt/nfs nfs4 rw 0 0",
        "//nas/share /mnt/smb cifs rw 0 0",
        "sshfs#me@h: /mnt/ssh fuse.sshfs rw 0 0",
        "lxcfs /var/lib/lxcfs fuse.lxcfs rw 0 0",
        "/dev/vda1 /var/lib/docker/containers/x/hosts ext4 rw 0 0",  # bind mount of /
        "/dev/sdb1 /mnt/My\\040Disk xfs rw 0 0",
        "tank/data /tank/data zfs rw 0 0",
        "/dev/sdc1 /boot/efi vfat rw 0 0",
        "/dev/mapper/vg-home /home btrfs rw 0 0",
        "/dev/mapper/vg-home /home/.snapshots btrfs rw 0 0",
        "/dev/sr0 /media/cdrom iso9660 ro 0 0",
    )
    real = filesystems.real_filesystems(mounts)
    assert [(m.mount, m.type) for m in real] == [
        ("/", "ext4"), ("/boot/efi", "vfat"), ("/home", "btrfs"), ("/media/cdrom", "iso9660"),
        ("/mnt/My Disk", "xfs"), ("/tank/data", "zfs"),
    ]


def test_filesystem_rows_on_this_machine_match_statvfs() -> None:
    collector = filesystems.FilesystemCollector()
    metrics: dict[str, object] = {}
    collector.collect(metrics, time.monotonic())
    for row in metrics["filesystems"]:  # type: ignore[attr-defined]
        st = os.statvfs(row["mount"])
        assert row["size"] == st.f_blocks * st.f_frsize
        if st.f_files:
            assert row["inodes"] == st.f_files
            assert 0 <= row["inodes_used"] <= row["inodes"]
    # unchanged mount table: no re-read, same rows
    again: dict[str, object] = {}
    collector.collect(again, time.monotonic())
    assert [r["mount"] for r in again["filesystems"]] == [  # type: ignore[attr-defined]
        r["mount"] for r in metrics["filesystems"]]  # type: ignore[attr-defined]


def test_connection_counts_match_the_socket_tables() -> None:
    """sockstat (what the agent reads) against a line count of /proc/net/tcp*, udp*
    (what it replaces), with sockets this test opens; a few tries absorb sockets
    that other processes open or close meanwhile."""
    held = []
    try:
        for _ in range(20):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen()
            held.append(s)
        for _ in range(5):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind(("127.0.0.1", 0))
            held.append(u)
        collector = connections.ConnectionsCollector()
        for _attempt in range(10):
            metrics: dict[str, dict[str, int]] = {}
            collector.collect(metrics, 0.0)  # type: ignore[arg-type]
            tcp_lines = connections.count_lines("/proc/net/tcp", "/proc/net/tcp6")
            udp_lines = connections.count_lines("/proc/net/udp", "/proc/net/udp6")
            got = metrics["connections"]
            if abs(got["tcp"] - tcp_lines) <= 2 and abs(got["udp"] - udp_lines) <= 2:
                break
        assert got["tcp"] >= 20 and got["udp"] >= 5
        assert abs(got["tcp"] - tcp_lines) <= 2, (got, tcp_lines)
        assert abs(got["udp"] - udp_lines) <= 2, (got, udp_lines)
    finally:
        for s in held:
            s.close()


def test_sockstat_parsing() -> None:
    text = (b"sockets: used 22\nTCP: inuse 2 orphan 0 tw 54 alloc 2 mem 47\n"
            b"UDP: inuse 3 mem 0\nUDPLITE: inuse 0\nTCP6: inuse 4\nUDP6: inuse 1\n")
    assert connections.parse_sockstat(text) == {"tcp": 60, "udp": 4}


def test_process_count_from_the_link_count_matches_a_listing() -> None:
    collector = processes.ProcessesCollector()
    for _attempt in range(10):
        metrics: dict[str, int] = {}
        collector.collect(metrics, time.monotonic())  # type: ignore[arg-type]
        listed = processes.count_listing()
        if metrics["processes"] == listed:
            break
    assert abs(metrics["processes"] - listed) <= 2


def test_temperatures_from_a_sysfs_tree(tmp_path: Path) -> None:
    hwmon = tmp_path / "hwmon" / "hwmon0"
    hwmon.mkdir(parents=True)
    (hwmon / "name").write_text("coretemp\n")
    (hwmon / "temp1_input").write_text("45000\n")
    (hwmon / "temp1_label").write_text("Package id 0\n")
    (hwmon / "temp2_input").write_text("51500\n")
    (hwmon / "temp3_input").write_text("garbage\n")  # a sensor answering nonsense is skipped
    nvme = tmp_path / "hwmon" / "hwmon1" / "device"
    nvme.mkdir(parents=True)
    (nvme / "name").write_text("nvme\n")
    (nvme / "temp1_input").write_text("38850\n")
    collector = temperatures.TemperatureCollector(str(tmp_path))
    metrics: dict[str, object] = {}
    collector.collect(metrics, time.monotonic())
    assert metrics["temperatures"] == [
        {"label": "coretemp Package id 0", "celsius": 45.0},
        {"label": "coretemp temp2", "celsius": 51.5},
        {"label": "nvme temp1", "celsius": 38.85},
    ]
    assert metrics["_temperature_max"] == 51.5


def test_thermal_zones_when_there_is_no_hwmon(tmp_path: Path) -> None:
    zone = tmp_path / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("x86_pkg_temp\n")
    (zone / "temp").write_text("60000\n")
    assert temperatures.discover(str(tmp_path)) == [
        temperatures.Sensor("x86_pkg_temp", str(zone / "temp"))]


def test_no_sensors_is_an_empty_list(tmp_path: Path) -> None:
    metrics: dict[str, object] = {}
    temperatures.TemperatureCollector(str(tmp_path)).collect(metrics, 0.0)
    assert metrics == {"temperatures": []}


def test_no_nvidia_driver_means_no_gpu_collector() -> None:
    assert GpuCollector.create() is None


def test_a_failing_collector_falls_back_and_the_sample_stays_valid() -> None:
    class Broken:
        name = "memory"
        fallback: ClassVar[dict[str, Any]] = {
            "memory": {"total": 0.0, "used": 0.0, "available": 0.0, "percent": 0.0},
            "swap": {"total": 0.0, "used": 0.0, "percent": 0.0}}

        def collect(self, metrics: dict[str, object], now: float) -> None:
            raise OSError("gone")

    sampler = Sampler()
    sampler.collectors = [c for c in sampler.collectors if c.name != "memory"] + [Broken()]
    reading = sampler.sample()
    assert reading.metrics["memory"]["total"] == 0.0
    wire.encode("sample", {"ts": reading.ts, "metrics": reading.metrics})


def test_proc_file_rereads_fresh_content(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * 10)
    f = ProcFile(path, size=4)  # smaller than the content: read on to the end
    assert f.read() == b"a" * 10
    path.write_bytes(b"b" * 20)  # replaced file: the open fd still sees the old inode
    f.close()
    assert f.read() == b"b" * 20
    assert ProcFile(tmp_path / "missing").read() is None
    uptime = ProcFile("/proc/uptime")
    first = uptime.read()
    time.sleep(0.02)
    assert first != uptime.read()  # /proc content is regenerated on each read


def test_host_facts_describe_this_machine() -> None:
    facts = hostfacts.host_facts()
    body = {"protocol": wire.PROTOCOL_VERSION, "agent_version": "0.1.0", "host": facts,
            "interval": 1.0}
    wire.decode(wire.encode("hello", body))
    assert facts["hostname"] == socket.gethostname()
    assert facts["kernel"] == os.uname().release
    assert facts["arch"] == os.uname().machine
    assert facts["cores"] == os.cpu_count()
    assert abs(facts["boot_time"] - psutil.boot_time()) < 2
    assert "127.0.0.1" not in facts["addresses"]
    if Path("/etc/os-release").exists():
        assert facts["os"] != "Linux"


def test_os_release_and_cpu_model_parsing(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text('NAME="Debian GNU/Linux"\nVERSION_ID="12"\n')
    assert hostfacts.os_name(tmp_path) == "Debian GNU/Linux 12"
    (tmp_path / "etc/os-release").write_text('PRETTY_NAME="Ubuntu 24.04 LTS"\n')
    assert hostfacts.os_name(tmp_path) == "Ubuntu 24.04 LTS"
    assert hostfacts.os_name(tmp_path / "none") == "Linux"
    x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
    assert hostfacts.cpu_model(x86) == "AMD EPYC 7B13"
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\n\nHardware\t: BCM2835\n"
    assert hostfacts.cpu_model(arm) == "BCM2835"
    assert hostfacts.cpu_model("") is None


def test_virtualization_fallbacks(tmp_path: Path) -> None:
    dmi = tmp_path / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    (dmi / "sys_vendor").write_text("QEMU\n")
    assert hostfacts.virtualization(tmp_path, use_systemd=False) == "qemu"
    (dmi / "sys_vendor").write_text("Dell Inc.\n")
    assert hostfacts.virtualization(tmp_path, use_systemd=False) is None
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("flags\t: fpu vme hypervisor lahf_lm\n")
    assert hostfacts.virtualization(tmp_path, use_systemd=False) == "vm"


def test_iterator_backed_proc_files_are_read_whole() -> None:
    """/proc/net/tcp returns about a page per read: both readers must loop to the end."""
    held = []
    try:
        for _ in range(100):  # ~150 bytes a line: well over one page
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen()
            held.append(s)
        with open("/proc/net/tcp", "rb") as f:
            expected = f.read().count(b"\n")
        from beeyard.agent.procfs import read_bytes

        whole = read_bytes("/proc/net/tcp")
        kept = ProcFile("/proc/net/tcp").read()
        assert whole is not None and kept is not None
        assert len(whole) > 8192
        assert abs(whole.count(b"\n") - expected) <= 5
        assert abs(kept.count(b"\n") - expected) <= 5
    finally:
        for s in held:
            s.close()


def test_the_unchecked_sample_packing_decodes_like_encode() -> None:
    """The daemon sends most samples as the sampler packed them, without the schema
    check: the bytes must mean exactly what wire.encode's would."""
    from beeyard.agent.sampling import PythonSampler

    sampler = PythonSampler()
    time.sleep(0.2)
    data, _ = sampler.sample()
    frame = wire.decode(data)
    assert frame.type == "sample"
    assert wire.decode(wire.encode("sample", frame.body)) == frame
