"""Fault tests with real processes (issue 3, item 9).

Three scenarios, each with its own ``beeyard-server`` and real ``beeyard-agent``
processes streaming at a 1 s interval:

1. ``kill -9`` of the server (embedded PostgreSQL) just before a minute boundary, restart
   on the same data dir and port: every agent reconnects, no minute summary is lost.
2. A stop and start of an external PostgreSQL 15 cluster (``tests/pgcluster.py``) across a
   minute boundary under a running server: it answers 200 or 503 throughout, never dies,
   ingest resumes, no minute summary is lost.
3. An agent in its own network namespace, joined to the host by a veth pair that this
   test creates (10.231.X.0/30, on that veth only); the server listens on the host
   side's address. The veth is cut for 2 minutes: the agent reconnects within its
   backoff and the minutes of the cut are all in the database.

The summaries are per wall-clock minute, so the scenarios run concurrently (started
by a module fixture, one thread each) and each test waits for its own: the whole
module takes about as long as the network cut (~3.5 minutes). Every process is
stopped by its PID; the namespace and veth are removed in ``finally`` blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from tests import pgcluster
from tests.serverproc import REQUIRE_ALL, ServerProcess, clean_env, start_server, stop_postgres

from beeyard.server.db.embedded import EmbeddedPostgres

pytestmark = pytest.mark.slow

PASSWORD = "fault tests passphrase"
HEARTBEAT = "2"
CUT_SECONDS = 120.0
SCENARIO_TIMEOUT = 330.0


# -- small helpers ---------------------------------------------------------------------


def call(host: str, port: int, method: str, path: str, body: Any = None,
         headers: Mapping[str, str] | None = None, timeout: float = 10) -> tuple[int, Any]:
    sent = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        raw = resp.read()
        if method == "POST" and path == "/api/auth/login":
            return resp.status, (json.loads(raw), resp.headers.get("Set-Cookie", ""))
        return resp.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def wait_ready(server: ServerProcess, host: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, f"server exited:\n{server.output()}"
        with contextlib.suppress(OSError, ValueError):
            if call(host, server.port, "GET", "/api/health", timeout=2)[0] == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"server not ready after {timeout} s:\n{server.output()}")


def admin(host: str, port: int) -> dict[str, str]:
    status, (body, cookie) = call(host, port, "POST", "/api/auth/login",
                                  {"username": "admin", "password": PASSWORD})
    assert status == 200, body
    return {"Cookie": cookie.split(";", 1)[0], "X-CSRF-Token": body["data"]["csrf_token"]}


def netns_prefix(ns: str | None) -> list[str]:
    return ["ip", "netns", "exec", ns] if ns else []


@dataclass
class Agent:
    server_id: int
    config: Path
    log: Path
    ns: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*netns_prefix(self.ns), sys.executable, "-m", "beeyard.agent.cli", "run",
             "--config", str(self.config), "--log-level", "debug"],
            stdin=subprocess.DEVNULL, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            env=clean_env(),
        )

    def stop(self) -> None:
        # ``ip netns exec`` execs the command: the PID is the agent's own.
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)


def enroll(host: str, port: int, headers: dict[str, str], workdir: Path, name: str,
           ns: str | None = None) -> Agent:
    status, body = call(host, port, "POST", "/api/agent/enrollments", {}, headers=headers)
    assert status == 201, body
    workdir.mkdir(parents=True)
    config = workdir / "agent.toml"
    done = subprocess.run(
        [*netns_prefix(ns), sys.executable, "-m", "beeyard.agent.cli", "enroll",
         "--server", f"http://{host}:{port}", "--code", body["data"]["code"], "--name", name,
         "--config", str(config), "--spool-dir", str(workdir / "spool"), "--interval", "1"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=clean_env(),
        timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    server_id = int(tomllib.loads(config.read_text())["server_id"])
    return Agent(server_id, config, workdir / "agent.log", ns)


def online(host: str, port: int, headers: dict[str, str]) -> dict[int, bool]:
    status, body = call(host, port, "GET", "/api/servers", headers=headers)
    assert status == 200, body
    return {int(s["id"]): bool(s["online"]) for s in body["data"]}


def wait_online(host: str, port: int, headers: dict[str, str], agents: list[Agent],
                timeout: float, want: bool = True) -> float:
    """Until every agent's server is online (or offline); returns the seconds it took."""
    start = time.monotonic()
    state: dict[int, bool] = {}
    while time.monotonic() - start < timeout:
        with contextlib.suppress(OSError):
            state = online(host, port, headers)
            if all(state.get(a.server_id) is want for a in agents):
                return time.monotonic() - start
        time.sleep(0.25)
    logs = "\n".join(a.log.read_text(errors="replace")[-3000:] for a in agents)
    raise AssertionError(f"agents not online={want} after {timeout} s: {state}\n{logs}")


def minute_of(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def sleep_until(t: datetime) -> None:
    delay = (t - datetime.now(UTC)).total_seconds()
    if delay > 0:
        time.sleep(delay)


def next_mark(second: int, lead: float = 8.0) -> datetime:
    """The next wall-clock time at ``:second`` that is at least ``lead`` seconds away."""
    now = datetime.now(UTC)
    mark = minute_of(now) + timedelta(seconds=second)
    while (mark - now).total_seconds() < lead:
        mark += timedelta(minutes=1)
    return mark


async def _minutes(dsn: str) -> dict[int, list[datetime]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT server_id, minute FROM metrics_minute ORDER BY 1, 2")
    finally:
        await conn.close()
    found: dict[int, list[datetime]] = {}
    for r in rows:
        found.setdefault(int(r["server_id"]), []).append(r["minute"])
    return found


def assert_no_gap(dsn: str, agents: list[Agent], before: datetime, through: datetime,
                  timeout: float) -> dict[int, list[datetime]]:
    """Wait until every agent's summary for ``through`` is committed, then check that
    each has one row for every minute from its first (at or before ``before``) to
    ``through``: nothing lost across the fault."""
    deadline = time.monotonic() + timeout
    while True:
        found = asyncio.run(_minutes(dsn))
        if all(found.get(a.server_id) and found[a.server_id][-1] >= through for a in agents):
            break
        if time.monotonic() > deadline:
            logs = "\n".join(a.log.read_text(errors="replace")[-3000:] for a in agents)
            raise AssertionError(f"summaries through {through} missing: {found}\n{logs}")
        time.sleep(1)
    for a in agents:
        minutes = found[a.server_id]
        assert minutes[0] <= before, (a.server_id, minutes, before)
        expected = [minutes[0] + timedelta(minutes=i)
                    for i in range(int((minutes[-1] - minutes[0]).total_seconds() // 60) + 1)]
        assert minutes == expected, f"server {a.server_id}: gap in {minutes}"
    return found


@dataclass
class Report:
    facts: dict[str, Any] = field(default_factory=dict)


# -- scenario 1: kill -9 of the server ----------------------------------------------------


def scenario_kill_server(scratch: Path) -> Report:
    report = Report()
    root = scratch / f"fault-kill-{secrets.token_hex(4)}"
    root.mkdir(mode=0o711)
    data_dir = root / "data"
    env = {"BEEYARD_ADMIN_PASSWORD": PASSWORD, "BEEYARD_AGENT_HEARTBEAT": HEARTBEAT}
    server = start_server(data_dir, env=env, log_name="server-1.log")
    agents: list[Agent] = []
    try:
        wait_ready(server, "127.0.0.1")
        headers = admin("127.0.0.1", server.port)
        for i in range(3):
            agents.append(enroll("127.0.0.1", server.port, headers, root / f"agent{i}", f"k{i}"))
        for a in agents:
            a.start()
        wait_online("127.0.0.1", server.port, headers, agents, 30)
        started = minute_of(datetime.now(UTC))

        # Killed just before a minute ends: that minute's summaries are sent while the
        # server is gone, so they can only arrive through the agents' spools.
        kill_at = next_mark(56)
        sleep_until(kill_at)
        server.stop(signal.SIGKILL)
        killed_minute = minute_of(kill_at)
        sleep_until(kill_at + timedelta(seconds=7))
        server = start_server(data_dir, port=server.port, env=env, log_name="server-2.log")
        wait_ready(server, "127.0.0.1")
        assert "adopting the embedded PostgreSQL" in server.output()
        headers = admin("127.0.0.1", server.port)
        report.facts["reconnect_s"] = round(
            wait_online("127.0.0.1", server.port, headers, agents, 90), 1)
        # Through the minute in which the server came back.
        through = killed_minute + timedelta(minutes=1)
        found = assert_no_gap(EmbeddedPostgres(data_dir).dsn, agents, min(started, killed_minute),
                              through, 100)
        report.facts["minutes"] = {k: len(v) for k, v in found.items()}
        assert server.proc.poll() is None
        return report
    finally:
        for a in agents:
            a.stop()
        server.stop()
        stop_postgres(data_dir)


# -- scenario 2: PostgreSQL restarted under the server -------------------------------------


def scenario_restart_postgres(scratch: Path) -> Report:
    report = Report()
    root = scratch / f"fault-pg-{secrets.token_hex(4)}"
    root.mkdir(mode=0o711)
    cluster = pgcluster.new_cluster(scratch)
    server: ServerProcess | None = None
    agents: list[Agent] = []
    try:
        name = f"beeyard_{secrets.token_hex(4)}"
        cluster.psql("CREATE ROLE beeyard_app LOGIN PASSWORD 'fault-app'")
        cluster.psql(f"CREATE DATABASE {name} OWNER beeyard_app")
        url = cluster.tcp_url("beeyard_app", "fault-app", name)
        dsn = cluster.admin_url.replace("/postgres?", f"/{name}?")
        server = start_server(root / "data", args=["--database-url", url], env={
            "BEEYARD_ADMIN_PASSWORD": PASSWORD, "BEEYARD_AGENT_HEARTBEAT": HEARTBEAT})
        wait_ready(server, "127.0.0.1")
        headers = admin("127.0.0.1", server.port)
        for i in range(2):
            agents.append(enroll("127.0.0.1", server.port, headers, root / f"agent{i}", f"p{i}"))
        for a in agents:
            a.start()
        wait_online("127.0.0.1", server.port, headers, agents, 30)

        # Down from :57 to :03, so the writer must hold that minute's summaries unacked.
        stop_at = next_mark(57)
        sleep_until(stop_at)
        pg_ctl = str(pgcluster.PG15_BIN / "pg_ctl")
        done = cluster._run(pg_ctl, "stop", "-D", str(cluster.pgdata), "-m", "fast", "-w")
        assert done.returncode == 0, done.stdout + done.stderr
        # Liveness stays 200; a route that needs the database answers 200 or 503.
        statuses: set[int] = set()

        def probe() -> int:
            assert call("127.0.0.1", server.port, "GET", "/api/health", timeout=5)[0] == 200
            status = call("127.0.0.1", server.port, "GET", "/api/servers", headers=headers,
                          timeout=10)[0]
            statuses.add(status)
            return status

        while datetime.now(UTC) < stop_at + timedelta(seconds=6):
            probe()
            time.sleep(0.2)
        options = (f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {cluster.socket_dir} "
                   "-c max_connections=200 -c fsync=off")
        done = cluster._run(pg_ctl, "start", "-D", str(cluster.pgdata), "-w", "-t", "60",
                            "-l", str(cluster.root / "postgres.log"), "-o", options)
        assert done.returncode == 0, done.stdout + done.stderr
        deadline = time.monotonic() + 60
        while probe() != 200:
            assert time.monotonic() < deadline, "the server never served again"
            time.sleep(0.2)
        report.facts["servers_statuses"] = sorted(statuses)
        assert statuses <= {200, 503}, statuses
        assert 503 in statuses, "the database outage was never visible"
        assert server.proc.poll() is None, server.output()
        wait_online("127.0.0.1", server.port, headers, agents, 60)
        stopped_minute = minute_of(stop_at)
        found = assert_no_gap(dsn, agents, stopped_minute, stopped_minute + timedelta(minutes=1),
                              100)
        report.facts["minutes"] = {k: len(v) for k, v in found.items()}
        return report
    finally:
        for a in agents:
            a.stop()
        if server is not None:
            server.stop()
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


# -- scenario 3: an agent's network cut for 2 minutes -------------------------------------


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=False, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {done.stderr}")
    return done


def netns_unavailable() -> str | None:
    """Why this machine cannot make network namespaces, or None when it can."""
    if shutil.which("ip") is None:
        return "iproute2 is not installed (apt-get install iproute2)"
    probe = f"byprobe{secrets.token_hex(3)}"
    done = ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"cannot create a network namespace (CAP_NET_ADMIN?): {done.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


def free_subnet() -> int:
    """A third octet X such that 10.231.X.0/30 is on no interface of this host."""
    used = ip("-4", "addr").stdout
    for _ in range(100):
        x = secrets.randbelow(256)
        if f"10.231.{x}." not in used:
            return x
    raise AssertionError("no free 10.231.X.0/30")


@contextlib.contextmanager
def namespace() -> Iterator[tuple[str, str, str, str]]:
    """(namespace, host-side veth, host address, agent address); removed on the way out."""
    tag = secrets.token_hex(3)
    ns, host_if, ns_if = f"byf{tag}", f"byh{tag}", f"byn{tag}"
    x = free_subnet()
    host_addr, ns_addr = f"10.231.{x}.1", f"10.231.{x}.2"
    try:
        ip("netns", "add", ns)
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns)
        ip("addr", "add", f"{host_addr}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", f"{ns_addr}/30", "dev", ns_if)
        ip("netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_if, host_addr, ns_addr
    finally:
        ip("netns", "del", ns, check=False)  # takes its end of the pair, and so the pair
        if ip("link", "show", host_if, check=False).returncode == 0:
            ip("link", "del", host_if, check=False)


def scenario_network_cut(scratch: Path) -> Report:
    report = Report()
    root = scratch / f"fault-net-{secrets.token_hex(4)}"
    root.mkdir(mode=0o711)
    data_dir = root / "data"
    agent: Agent | None = None
    with namespace() as (ns, host_if, host_addr, _):
        server = start_server(data_dir, args=["--host", host_addr], env={
            "BEEYARD_ADMIN_PASSWORD": PASSWORD, "BEEYARD_AGENT_HEARTBEAT": HEARTBEAT})
        try:
            wait_ready(server, host_addr)
            headers = admin(host_addr, server.port)
            agent = enroll(host_addr, server.port, headers, root / "agent", "netns", ns=ns)
            agent.start()
            wait_online(host_addr, server.port, headers, [agent], 30)
            time.sleep(3)

            ip("link", "set", host_if, "down")
            cut_at = datetime.now(UTC)
            # The server notices the dead link within 3 heartbeats.
            report.facts["offline_after_s"] = round(
                wait_online(host_addr, server.port, headers, [agent], 20, want=False), 1)
            sleep_until(cut_at + timedelta(seconds=CUT_SECONDS))
            ip("link", "set", host_if, "up")
            restored_at = datetime.now(UTC)
            # Backoff ceiling 60 s, plus a connect attempt that may hang (15 s timeout).
            report.facts["reconnect_s"] = round(
                wait_online(host_addr, server.port, headers, [agent], 100), 1)
            found = assert_no_gap(EmbeddedPostgres(data_dir).dsn, [agent], minute_of(cut_at),
                                  minute_of(restored_at), 100)
            report.facts["minutes"] = {k: len(v) for k, v in found.items()}
            assert len(found[agent.server_id]) >= 3  # the cut spans at least 3 minutes
            return report
        finally:
            if agent is not None:
                agent.stop()
            server.stop()
            stop_postgres(data_dir)


# -- the tests -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenarios(scratch: Path) -> Iterator[dict[str, concurrent.futures.Future[Report] | str]]:
    """Every scenario started at once, each in its own thread; a string says why one
    cannot run here."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=3)
    started: dict[str, concurrent.futures.Future[Report] | str] = {
        "kill": pool.submit(scenario_kill_server, scratch)}
    if pgcluster.available():
        started["postgres"] = pool.submit(scenario_restart_postgres, scratch)
    else:
        started["postgres"] = (f"PostgreSQL 15 is not installed at {pgcluster.PG15_BIN} "
                               "(apt-get install postgresql-15)")
    reason = netns_unavailable()
    started["netns"] = reason if reason else pool.submit(scenario_network_cut, scratch)
    try:
        yield started
    finally:
        pool.shutdown(wait=True)


def outcome(scenarios: dict[str, concurrent.futures.Future[Report] | str], key: str) -> Report:
    value = scenarios[key]
    if isinstance(value, str):
        if REQUIRE_ALL:
            pytest.fail(value + " and BEEYARD_REQUIRE_ALL=1 forbids skipping")
        pytest.skip(value)
    report = value.result(timeout=SCENARIO_TIMEOUT)
    print(key, report.facts)
    return report


def test_kill_9_of_the_server_loses_no_minute(
    scenarios: dict[str, concurrent.futures.Future[Report] | str],
) -> None:
    outcome(scenarios, "kill")


def test_postgres_restart_under_the_server_loses_no_minute(
    scenarios: dict[str, concurrent.futures.Future[Report] | str],
) -> None:
    outcome(scenarios, "postgres")


def test_two_minute_network_cut_loses_no_minute(
    scenarios: dict[str, concurrent.futures.Future[Report] | str],
) -> None:
    outcome(scenarios, "netns")
