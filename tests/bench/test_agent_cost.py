"""The agent's own cost, side by side with prometheus-node-exporter in the same run.

Run with ``tox -e bench``; figures are recorded in docs/benchmarks.md.
``BEEYARD_BENCH_AGENT_SECONDS`` sets the window (default 600 s = 10 minutes).

A real ``beeyard-agent`` is enrolled through the API (an admin mints a code,
``beeyard-agent enroll`` consumes it) and runs at its 1 s default against a real
``beeyard-server``. Debian's ``prometheus-node-exporter`` (``apt-get install
prometheus-node-exporter``; skipped if absent) runs on a free loopback port and
is scraped once a second with a plain HTTP GET, so each does one reading of the
host per second. For both: CPU (``/proc/<pid>/stat`` utime+stime, and for the agent
also its threads' ``schedstat`` in nanoseconds) over the
window after a 15 s warm-up (start-up and imports are reported separately),
divided by the readings taken in the window, and RSS at the end.
"""

from __future__ import annotations

import http.client
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from serverproc import clean_env, free_port, request, start_server, stop_postgres

pytestmark = pytest.mark.bench

PASSWORD = "a benchmark passphrase"
SECONDS = float(os.environ.get("BEEYARD_BENCH_AGENT_SECONDS", "600"))
WARMUP = 15.0
EXPORTER = "/usr/bin/prometheus-node-exporter"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_ns(pid: int) -> int:
    """The same CPU in nanoseconds (the scheduler's account of each live thread), where
    utime+stime counts 10 ms ticks: ±0.017 ms per sample over 600 samples, as much as
    the last cuts to the agent were worth."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with open(task / "schedstat") as f:
            total += int(f.read().split()[0])
    return total


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def scrape(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200
        return len(body)
    finally:
        conn.close()


def test_agent_cost(scratch: Path) -> None:
    if not os.access(EXPORTER, os.X_OK):
        pytest.skip(f"{EXPORTER} is not installed (apt-get install prometheus-node-exporter)")
    work = scratch / f"agent-cost-{secrets.token_hex(3)}"
    work.mkdir(mode=0o711)
    server = start_server(work / "data", env={"BEEYARD_ADMIN_PASSWORD": PASSWORD})
    agent = exporter = None
    try:
        server.wait_ready()
        resp = server.login(PASSWORD)
        assert resp.status == 200, resp.body
        admin = {"Cookie": resp.headers["Set-Cookie"].split(";", 1)[0],
                 "X-CSRF-Token": resp.json()["data"]["csrf_token"]}
        resp = request(server.port, "POST", "/api/agent/enrollments", {}, headers=admin)
        assert resp.status == 201, resp.body
        config = work / "agent.toml"
        enroll = subprocess.run(
            [sys.executable, "-m", "beeyard.agent.cli", "enroll", "--server",
             f"http://127.0.0.1:{server.port}", "--code", resp.json()["data"]["code"],
             "--name", "bench", "--config", str(config), "--token-file", str(work / "token"),
             "--spool-dir", str(work / "spool")],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=clean_env(),
            timeout=60, check=False,
        )
        assert enroll.returncode == 0, enroll.stdout + enroll.stderr

        agent_log = (work / "agent.log").open("wb")
        started = time.monotonic()
        agent = subprocess.Popen(
            [sys.executable, "-m", "beeyard.agent.cli", "run", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=agent_log, stderr=subprocess.STDOUT,
            env=clean_env())
        ne_port = free_port()
        exporter = subprocess.Popen(
            [EXPORTER, f"--web.listen-address=127.0.0.1:{ne_port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=(work / "node-exporter.log").open("wb"))

        scrapes = 0
        scraped_bytes = 0
        next_scrape = time.monotonic() + 1
        base: tuple[float, float, float] | None = None
        start_cpu = (0.0, 0.0)
        end = time.monotonic() + WARMUP + SECONDS
        while time.monotonic() < end:
            time.sleep(max(0.0, next_scrape - time.monotonic()))
            next_scrape += 1
            assert agent.poll() is None, (work / "agent.log").read_text()
            assert exporter.poll() is None, (work / "node-exporter.log").read_text()
            try:
                size = scrape(ne_port)
            except OSError:
                continue  # still starting
            if base is None and time.monotonic() - started >= WARMUP:
                start_cpu = (cpu_seconds(agent.pid), cpu_seconds(exporter.pid))
                base = (time.monotonic(), *start_cpu)
                agent_ns = cpu_ns(agent.pid)
                scrapes = 0
            elif base is not None:
                scrapes += 1
                scraped_bytes = size
        assert base is not None
        window = time.monotonic() - base[0]
        agent_cpu = cpu_seconds(agent.pid) - base[1]
        agent_ns = cpu_ns(agent.pid) - agent_ns
        ne_cpu = cpu_seconds(exporter.pid) - base[2]
        agent_rss, ne_rss = rss_mb(agent.pid), rss_mb(exporter.pid)
        samples = int(window)  # the agent reads the host once per 1 s interval
        print(f"\nagent vs node exporter, {window:.0f} s window after {WARMUP:.0f} s warm-up, "
              f"load {os.getloadavg()}")
        print(f"  beeyard-agent          {agent_cpu * 1e3 / samples:.3f} ms CPU per sample "
              f"({agent_cpu:.2f} s over {samples} samples; start-up {start_cpu[0]:.2f} s), "
              f"RSS {agent_rss:.1f} MB; in nanoseconds {agent_ns / 1e6 / samples:.4f} ms")
        print(f"  node-exporter          {ne_cpu * 1e3 / max(1, scrapes):.3f} ms CPU per scrape "
              f"({ne_cpu:.2f} s over {scrapes} scrapes of {scraped_bytes} bytes; start-up "
              f"{start_cpu[1]:.2f} s), RSS {ne_rss:.1f} MB")
        version = subprocess.run([EXPORTER, "--version"], capture_output=True, text=True,
                                 check=False)
        print(f"  node-exporter: {(version.stdout + version.stderr).splitlines()[:1]}")
    finally:
        for proc in (agent, exporter):
            if proc is not None:
                stop(proc)
        server.stop()
        stop_postgres(work / "data")
        shutil.rmtree(work / "spool", ignore_errors=True)
