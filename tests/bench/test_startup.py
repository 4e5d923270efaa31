"""Start-up to first successful sign-in on the embedded PostgreSQL, and the memory a
server spends refusing 200 MB uploads. Run with ``tox -e bench``; the figures are
recorded in docs/benchmarks.md.

Start-up is timed from just before the process is spawned to the first
``POST /api/auth/login`` answered 200 (the client retries every 20 ms while the
port is closed):

- fresh: an empty data directory (initdb, migrations, admin creation);
- warm: the same directory again, its PostgreSQL stopped cleanly by the last run.
"""

from __future__ import annotations

import os
import platform
import secrets
import statistics
import time
from pathlib import Path

import pytest

from serverproc import (
    MB,
    PeakRss,
    free_port,
    request,
    send_huge,
    start_server,
    stop_postgres,
)

pytestmark = pytest.mark.bench

RUNS = int(os.environ.get("BEEYARD_BENCH_RUNS", "5"))
PASSWORD = "a benchmark passphrase"


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem_kb / 1024 / 1024:.1f} GiB RAM, "
            f"Python {platform.python_version()}, {'root' if os.geteuid() == 0 else 'user'}")


def time_to_login(data_dir: Path) -> tuple[float, int]:
    port = free_port()
    started = time.perf_counter()
    server = start_server(data_dir, port=port, env={"BEEYARD_ADMIN_PASSWORD": PASSWORD},
                          log_name=f"bench-{secrets.token_hex(3)}.log")
    try:
        while True:
            assert server.proc.poll() is None, server.output()
            try:
                resp = server.login(PASSWORD)
            except OSError:
                time.sleep(0.02)
                continue
            assert resp.status == 200, resp.body
            return time.perf_counter() - started, server.pid
    finally:
        assert server.stop() == 0


def summary(name: str, values: list[float]) -> str:
    return (f"{name:<6} median {statistics.median(values):.2f} s   "
            f"min {min(values):.2f} s   max {max(values):.2f} s   (n={len(values)})")


def test_startup_to_first_login(scratch: Path) -> None:
    fresh, warm = [], []
    for _ in range(RUNS):
        data_dir = scratch / f"bench-{secrets.token_hex(4)}" / "data"
        data_dir.parent.mkdir(mode=0o711)
        try:
            fresh.append(time_to_login(data_dir)[0])
            warm.append(time_to_login(data_dir)[0])
        finally:
            stop_postgres(data_dir)
    print(f"\nstart-up to first successful login, embedded PostgreSQL — {machine()}")
    print(summary("fresh", fresh))
    print(summary("warm", warm))


def test_memory_while_refusing_200_mb(scratch: Path) -> None:
    data_dir = scratch / f"bench-{secrets.token_hex(4)}" / "data"
    data_dir.parent.mkdir(mode=0o711)
    server = start_server(data_dir)
    try:
        server.wait_ready()
        print(f"\nRSS while refusing a 200 MB POST — {machine()}")
        for path in ("/api/auth/login", "/api/auth/logout", "/api/no-such-route"):
            for chunked in (False, True):
                request(server.port, "POST", path, b"{}", {"Content-Type": "application/json"})
                before = server.rss()
                started = time.perf_counter()
                with PeakRss(server) as rss:
                    status, _, early, sent = send_huge(server.port, "POST", path, chunked)
                took = time.perf_counter() - started
                framing = "chunked" if chunked else "Content-Length"
                print(f"{path:<20} {framing:<14} -> {status}  RSS before {before / MB:.1f} MB, "
                      f"peak +{(rss.peak - before) / MB:.2f} MB, answered early: {early}, "
                      f"{sent / MB:.0f} MB sent in {took:.2f} s")
    finally:
        server.stop()
        stop_postgres(data_dir)
