"""Fleet simulator: N agents of the real protocol in one process against a real server.

Run with ``tox -e bench``; figures are recorded in docs/benchmarks.md. N is
parametrised (1,000 and 10,000); ``BEEYARD_BENCH_FLEET_N`` (comma-separated)
and ``BEEYARD_BENCH_FLEET_SECONDS`` (default 300) override it.

What each simulated agent is: a raw asyncio ``Protocol`` speaking RFC 6455 on
loopback (cheaper per connection than aiohttp's client or the agent's stream
client), with a run token from a real enrollment: codes are minted and
consumed through the server's own db layer (``db.enrollments.create`` and
``register``, the functions behind ``POST /api/agent/enrollments`` and
``/api/agent/register``), because 10,000 HTTP registrations are throttled by
design. It sends ``hello``, then a ``sample`` every second (a realistic
METRICS body: 4 cores, 3 filesystems, 2 disks, 3 interfaces, 2 temperatures;
validated by ``wire.encode`` once, then re-packed with the send time as
``ts``), a ``summary`` of each closed minute at its own point in the next
``SPREAD`` seconds (as a real agent's ``summary_spread``, 30 s by default;
``BEEYARD_BENCH_FLEET_SPREAD`` overrides it, 0 sends them all on the minute),
and answers ``ping``. Frames are
masked with an all-zero key (valid framing; the server does not care), so the
simulator spends its CPU on the protocol, not on XOR.

A browser-like subscriber runs in its own process (so the simulator's busy
event loop does not add to the latency it measures) on ``/api/ws/servers``
with an admin session cookie; for every ``sample`` event it records
``time.time() - ts``: the same clock on the same machine, so that is the time
from the agent's send to the event's arrival at the browser socket.

Measured over the window (after everybody connected and a 10 s warm-up):
server process CPU (``/proc/<pid>/stat`` utime+stime) and, separately, its
embedded PostgreSQL's; CPU per live sample from the seconds without summaries,
CPU per summary from the excess in the seconds in which summaries arrive (the
first ``SPREAD`` + 4 of each minute);
server RSS; latency percentiles; summaries sent, acked and found in
``metrics_minute`` (lost = sent − rows).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import multiprocessing
import os
import resource
import secrets
import statistics
import struct
import time
from pathlib import Path
from typing import Any

import asyncpg
import msgpack
import psutil
import pytest

from beeyard.agent.config import DEFAULT_SUMMARY_SPREAD
from beeyard.agent.link import spread_offset
from beeyard.server.auth import tokens
from beeyard.server.db import enrollments
from beeyard.server.db.embedded import EmbeddedPostgres
from beeyard.server.db.pool import _init_connection
from beeyard.server.services import memory
from beeyard.shared import wire
from serverproc import postmaster_pid, start_server, stop_postgres

pytestmark = pytest.mark.bench

PASSWORD = "a benchmark passphrase"
SECONDS = float(os.environ.get("BEEYARD_BENCH_FLEET_SECONDS", "300"))
SIZES = [int(n) for n in os.environ.get("BEEYARD_BENCH_FLEET_N", "1000,10000").split(",")]
WARMUP = 10.0
# Each simulated agent sends a closed minute's summary at its own point in the next
# SPREAD seconds, as a real agent does (its ``summary_spread``, 30 s by default).
SPREAD = float(os.environ.get("BEEYARD_BENCH_FLEET_SPREAD", DEFAULT_SUMMARY_SPREAD))
SLOTS = 100  # each second is cut in 100 slots of 10 ms; an agent always sends in its slot
TICK = os.sysconf("SC_CLK_TCK")


# -- the payload -------------------------------------------------------------------------


def metrics(i: int) -> dict[str, Any]:
    gb = 1024**3
    return {
        "cpu": 12.5 + i % 50,
        "cpu_cores": [10.0, 15.5, 8.25, 20.0],
        "load": [0.42, 0.37, 0.31],
        "memory": {"total": 16 * gb, "used": 6.2 * gb, "available": 9.1 * gb, "percent": 38.8},
        "swap": {"total": 2 * gb, "used": 0.0, "percent": 0.0},
        "filesystems": [
            {"mount": "/", "type": "ext4", "device": "/dev/sda1", "size": 100 * gb,
             "used": 41 * gb, "free": 59 * gb, "percent": 41.0, "inodes": 6553600,
             "inodes_used": 412345},
            {"mount": "/boot/efi", "type": "vfat", "device": "/dev/sda15", "size": 0.1 * gb,
             "used": 0.01 * gb, "free": 0.09 * gb, "percent": 10.2},
            {"mount": "/var/lib/docker", "type": "xfs", "device": "/dev/sdb1",
             "size": 500 * gb, "used": 120 * gb, "free": 380 * gb, "percent": 24.0,
             "inodes": 262144000, "inodes_used": 1203040},
        ],
        "disks": [
            {"device": "sda", "read_bps": 4096.0, "write_bps": 81920.0, "read_iops": 1.0,
             "write_iops": 12.0},
            {"device": "sdb", "read_bps": 0.0, "write_bps": 409600.0, "read_iops": 0.0,
             "write_iops": 30.0},
        ],
        "net": [
            {"iface": "eth0", "rx_bps": 12000.0, "tx_bps": 8000.0, "rx_bytes": 9.1e10,
             "tx_bytes": 4.2e10},
            {"iface": "eth1", "rx_bps": 300.0, "tx_bps": 120.0, "rx_bytes": 1.2e8,
             "tx_bytes": 4.0e7},
            {"iface": "docker0", "rx_bps": 0.0, "tx_bps": 0.0, "rx_bytes": 1.0e6,
             "tx_bytes": 2.0e6},
        ],
        "net_total": {"rx_bps": 12300.0, "tx_bps": 8120.0, "rx_bytes": 9.1e10,
                      "tx_bytes": 4.2e10},
        "connections": {"tcp": 42, "udp": 7},
        "processes": 187,
        "uptime": 864000.0 + i,
        "temperatures": [{"label": "Package id 0", "celsius": 48.0},
                         {"label": "Core 0", "celsius": 46.0}],
    }


def summary_values() -> dict[str, list[float]]:
    names = ("cpu", "load1", "load5", "load15", "memory_used", "memory_percent", "swap_used",
             "disk_used_percent", "disk_read_bps", "disk_write_bps", "net_rx_bps",
             "net_tx_bps", "tcp", "udp", "processes", "temperature_max")
    return {n: [10.0, 5.0, 20.0] for n in names}


def packer(i: int) -> Any:
    """A function ts -> the sample message, byte for byte what ``wire.encode`` produces."""
    body = metrics(i)
    reference = wire.encode("sample", {"ts": 1.0, "metrics": body})
    checked = msgpack.unpackb(reference)["b"]["metrics"]
    pack = msgpack.Packer(use_bin_type=True).pack

    def sample(ts: float) -> bytes:
        return pack({"t": "sample", "b": {"ts": ts, "metrics": checked}})

    assert sample(1.0) == reference
    return sample


def ws_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """A masked client frame with the all-zero key (the payload goes as is)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


# -- one simulated agent -----------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.samples = 0
        self.summaries = 0  # sent in the measuring window
        self.sent = 0  # sent at all (the warm-up's too): what must be in the table
        self.acked = 0
        self.closed = 0
        self.byes: list[str] = []


class Agent(asyncio.Protocol):
    def __init__(self, i: int, port: int, token: str, stats: Stats, sample: Any) -> None:
        self.i = i
        self.stats = stats
        self.sample_bytes = sample
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.welcome: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.minute: int | None = None
        self.in_minute = 0
        self.due: tuple[int, int] | None = None  # a closed minute waiting for its delay
        self.last_sample = float("-inf")
        self.heartbeat = 5.0  # until welcome says
        self.delay = spread_offset(i + 1, SPREAD)  # as the agent of server i + 1 would
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET /api/agent/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1
        self.transport = None
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionError(f"agent {self.i}: link lost"))

    def send(self, frame_type: str, body: dict[str, Any]) -> None:
        if self.transport is not None:
            self.transport.write(ws_frame(msgpack.packb({"t": frame_type, "b": body})))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end])
            del self.buf[:end + 4]
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                if not self.welcome.done():
                    self.welcome.set_exception(ConnectionError(head.decode(errors="replace")))
                return
            self.upgraded = True
            self.send("hello", {
                "protocol": wire.PROTOCOL_VERSION, "agent_version": "bench",
                "host": {"hostname": f"sim-{self.i}", "os": "Debian 12", "kernel": "6.1.0",
                         "arch": "x86_64", "cpu_model": "sim", "cores": 4,
                         "boot_time": 1.7e9},
                "capabilities": [], "interval": 1.0,
            })
        buf = self.buf
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            start = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = struct.unpack_from("!H", buf, 2)[0]
                start = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = struct.unpack_from("!Q", buf, 2)[0]
                start = 10
            if len(buf) < start + n:
                return
            opcode = buf[0] & 0x0F
            payload = bytes(buf[start:start + n])
            del buf[:start + n]
            if opcode == 0x2:
                self.frame(msgpack.unpackb(payload))
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(ws_frame(payload, 0xA))

    def frame(self, message: dict[str, Any]) -> None:
        t, body = message["t"], message.get("b", {})
        if t == "welcome":
            self.heartbeat = body["heartbeat"]
            if not self.welcome.done():
                self.welcome.set_result(body["server_id"])
        elif t == "ping":
            # as a real agent: no pong while its samples flow (any frame will do), but
            # before the first sample (the fleet is still connecting) or after a pause
            if time.time() - self.last_sample >= self.heartbeat:
                self.send("pong", {"ts": body["ts"]})
        elif t == "ack":
            self.stats.acked += len(body["minutes"])
        elif t == "bye":
            self.stats.byes.append(body["code"])

    def tick(self, now: float, count: bool) -> None:
        """One live sample; a closed minute's summary goes out ``delay`` seconds into the
        next minute, as a real agent's does (``summary_spread``)."""
        if self.transport is None:
            return
        minute = int(now // 60 * 60)
        if self.minute is not None and minute != self.minute and self.in_minute:
            self.due = (self.minute, self.in_minute)
            self.in_minute = 0
        if self.due is not None and now - minute >= self.delay:
            self.send("summary", {"minute": self.due[0], "samples": self.due[1],
                                  "values": summary_values(), "net_rx_bytes": 7.2e5,
                                  "net_tx_bytes": 4.8e5})
            self.stats.sent += 1
            if count:
                self.stats.summaries += 1
            self.due = None
        self.minute = minute
        self.in_minute += 1
        self.transport.write(ws_frame(self.sample_bytes(now)))
        self.last_sample = now
        if count:
            self.stats.samples += 1


# -- the browser-side subscriber (own process) ------------------------------------------


def subscriber(port: int, cookie: str, start: Any, stop: Any, out: Any) -> None:
    import aiohttp

    lat: list[float] = []
    paused = gc_pauses()
    trend: list[tuple[float, float]] = []  # (time, latency) of every 1,000th sample
    worst: dict[int, float] = {}  # unix second -> the largest latency seen in it
    slow: dict[int, int] = {}  # second of the minute -> samples later than 100 ms in it
    closes: list[str] = []
    other = 0
    frames = 0  # WebSocket messages: how finely the server batches its events

    async def run() -> None:
        nonlocal other, frames
        timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5)
        async with aiohttp.ClientSession() as session:
            while True:  # a browser reconnects after 4008 (too slow)
                async with session.ws_connect(
                    f"http://127.0.0.1:{port}/api/ws/servers", headers={"Cookie": cookie},
                    max_msg_size=0, timeout=timeout,
                ) as ws:
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        now = time.time()
                        frames += 1
                        data = json.loads(msg.data)
                        if isinstance(data, dict):  # the snapshot
                            other += 1
                            continue
                        for event in data:  # a batch of changes
                            if start.is_set() and event["type"] == "sample":
                                lat.append(now - event["ts"])
                                second = int(now)
                                worst[second] = max(worst.get(second, 0.0), lat[-1])
                                if lat[-1] > 0.1:
                                    slow[second % 60] = slow.get(second % 60, 0) + 1
                                if len(lat) % 1000 == 0:
                                    trend.append((now, lat[-1]))
                            else:
                                other += 1
                    closes.append(f"{ws.close_code} {ws.exception()!r}")

    async def until_stopped() -> None:
        task = asyncio.create_task(run())
        while not stop.is_set() and not task.done():
            await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task

    asyncio.run(until_stopped())
    result: dict[str, Any] = {"closed": closes[:5], "closes": len(closes), "other": other,
                              "frames": frames, "subscriber_gc_pauses": paused[:10]}
    if worst:  # the slowest seconds, with their second of the minute: what causes the tail?
        result["worst_seconds"] = [f"{time.strftime('%H:%M:%S', time.gmtime(t))} "
                                   f"{x * 1e3:.0f} ms" for t, x in sorted(
            worst.items(), key=lambda kv: -kv[1])[:8]]
    if slow:  # where in the minute the samples over 100 ms arrived
        result["over_100ms_by_second"] = dict(sorted(slow.items()))
    if trend:  # the median latency of each 10 s of the window: steady, or falling behind?
        t0 = trend[0][0]
        buckets: dict[int, list[float]] = {}
        for t, x in trend:
            buckets.setdefault(int((t - t0) // 10), []).append(x)
        result["p50_per_10s_ms"] = [round(statistics.median(v) * 1e3, 1)
                                    for _, v in sorted(buckets.items())]
    lat.sort()
    result["n"] = len(lat)
    if lat:
        result.update(p50=lat[len(lat) // 2], p99=lat[int(len(lat) * 0.99)],
                      p999=lat[int(len(lat) * 0.999)], max=lat[-1],
                      mean=statistics.fmean(lat))
    out.send(result)


def gc_pauses(min_s: float = 0.05) -> list[str]:
    """Record this process's collections longer than ``min_s`` (when, generation, how
    long): a pause of the simulator or the subscriber shows as latency too, so the
    report says when they paused, to tell theirs from the server's."""
    import gc
    pauses: list[str] = []

    def note(generation: int, seconds: float, _collected: int) -> None:
        pauses.append(f"{time.strftime('%H:%M:%S')} gen{generation} {seconds * 1e3:.0f} ms")

    gc.callbacks.append(memory.collection_timer(note, min_s))
    return pauses


# -- measuring -------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICK


async def enroll(dsn: str, n: int) -> tuple[list[str], list[int]]:
    """n real enrollments through the db layer: mint a code, register with it."""
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=8,
                                     init=_init_connection)
    assert pool is not None
    out: list[str] = []
    ids: list[int] = []

    async def one(i: int) -> None:
        code = secrets.token_urlsafe(24)
        await enrollments.create(pool, prefix=code[:8], digest=tokens.digest(code),
                                 created_by=None, ttl_seconds=600)
        token, token_digest = tokens.new_secret(tokens.AGENT_TOKEN_PREFIX)
        got = await enrollments.register(pool, code_digest=tokens.digest(code),
                                         name=f"sim-{i}", host={"hostname": f"sim-{i}"},
                                         token_digest=token_digest)
        assert got is not None
        out.append(token)
        ids.append(got[0])

    try:
        for base in range(0, n, 200):  # below MAX_PENDING codes at any time
            await asyncio.gather(*(one(i) for i in range(base, min(n, base + 200))))
    finally:
        await pool.close()
    return out, ids


async def count_rows(dsn: str, ids: list[int]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM metrics_minute WHERE server_id = ANY($1::bigint[])", ids)
        return n
    finally:
        await conn.close()


async def simulate(server: Any, pg: EmbeddedPostgres, n: int, cookie: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    me = psutil.Process()
    t0 = time.perf_counter()
    toks, ids = await enroll(pg.dsn, n)
    enroll_s = time.perf_counter() - t0

    stats = Stats()
    packers = [packer(i) for i in range(16)]  # 16 distinct bodies, shared
    agents: list[Agent] = []
    t0 = time.perf_counter()
    gate = asyncio.Semaphore(200)

    async def connect(i: int) -> None:
        async with gate:
            _, agent = await loop.create_connection(
                lambda: Agent(i, server.port, toks[i], stats, packers[i % 16]),
                "127.0.0.1", server.port)
            await asyncio.wait_for(agent.welcome, 60)
            agents.append(agent)

    await asyncio.gather(*(connect(i) for i in range(n)))
    connect_s = time.perf_counter() - t0

    ctx = multiprocessing.get_context("fork")
    start, stop = ctx.Event(), ctx.Event()
    recv, send = ctx.Pipe(duplex=False)
    sub = ctx.Process(target=subscriber, args=(server.port, cookie, start, stop, send))
    sub.start()

    measuring = False
    window_end = float("inf")
    timeline: list[tuple[float, float, float, float, int]] = []  # t, server, pg, self, samples
    postmaster = postmaster_pid(server.data_dir)
    assert postmaster is not None, "the embedded PostgreSQL's postmaster.pid is missing"

    def pg_cpu() -> float:
        """PostgreSQL's CPU seconds so far: the postmaster's own, the ended backends'
        (added to the postmaster's cutime/cstime when it reaps them) and the live
        backends'. Monotonic, unlike a sum over the processes alive at each reading."""
        try:
            fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
            children = [p.pid for p in psutil.Process(postmaster).children()]
        except (OSError, psutil.Error):
            return 0.0
        own = sum(int(x) for x in fields[11:15]) / TICK  # utime stime cutime cstime
        return own + cpu_seconds(children)

    def snap() -> tuple[float, float, float, float, int]:
        return (time.time(), cpu_seconds([server.pid]), pg_cpu(),
                cpu_seconds([os.getpid()]), stats.samples)

    async def ticker() -> None:
        base = loop.time()
        second = 0
        while loop.time() < window_end:
            for slot in range(SLOTS):
                delay = base + second + slot / SLOTS - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.time()
                for agent in agents[slot::SLOTS]:
                    agent.tick(now, measuring)
            second += 1
            if measuring:
                timeline.append(snap())

    tick_task = asyncio.create_task(ticker())
    await asyncio.sleep(WARMUP)
    rss_before = server.rss()
    measuring = True
    start.set()
    timeline.append(snap())
    window_end = loop.time() + SECONDS
    sim_paused = gc_pauses()
    await tick_task
    stop.set()
    rss = server.rss()
    sim_rss = me.memory_info().rss
    # Acks for the summaries of the window: the writer commits within a second or two.
    for _ in range(30):
        if stats.acked >= stats.sent:
            break
        await asyncio.sleep(1)
    await asyncio.sleep(2)
    rows = await count_rows(pg.dsn, ids)
    lat = recv.recv() if recv.poll(30) else {"closed": "no answer from the subscriber"}
    sub.join(10)
    for agent in agents:
        if agent.transport is not None:
            agent.transport.close()

    # CPU: per-second deltas; the first SPREAD + 4 seconds of each minute carry the summaries.
    per_s = []
    burst = []
    for a, b in itertools.pairwise(timeline):
        d = (b[1] - a[1], b[2] - a[2], b[3] - a[3], b[4] - a[4], b[0] - a[0])
        near = (b[0] % 60) < SPREAD + 4 or (a[0] % 60) < SPREAD + 4 or int(
            a[0] // 60) != int(b[0] // 60)
        (burst if near else per_s).append(d)
    span = timeline[-1][0] - timeline[0][0]
    server_cpu = timeline[-1][1] - timeline[0][1]
    pg_seconds = timeline[-1][2] - timeline[0][2]
    sim_cpu = timeline[-1][3] - timeline[0][3]
    base_srv = sum(d[0] for d in per_s) / max(1, sum(d[3] for d in per_s))
    base_pg = sum(d[1] for d in per_s) / max(1, sum(d[3] for d in per_s))
    burst_srv = sum(d[0] for d in burst) - base_srv * sum(d[3] for d in burst)
    burst_pg = sum(d[1] for d in burst) - base_pg * sum(d[3] for d in burst)
    return {
        "n": n, "enroll_s": enroll_s, "connect_s": connect_s, "window_s": span,
        "samples": stats.samples, "summaries": stats.summaries, "sent": stats.sent,
        "acked": stats.acked, "rows": rows, "not_committed": stats.sent - rows,
        "server_cores": server_cpu / span, "pg_cores": pg_seconds / span,
        "sim_cores": sim_cpu / span,
        "server_per_sample_us": base_srv * 1e6, "pg_per_sample_us": base_pg * 1e6,
        "server_per_summary_ms": burst_srv / max(1, stats.summaries) * 1e3,
        "pg_per_summary_ms": burst_pg / max(1, stats.summaries) * 1e3,
        "rss_before_mb": rss_before / 2**20, "rss_mb": rss / 2**20,
        "sim_rss_mb": sim_rss / 2**20, "closed_links": stats.closed, "byes": stats.byes[:5],
        "published_per_s": lat.get("n", 0) / span if isinstance(lat, dict) else 0,
        "latency": lat, "load": os.getloadavg(), "simulator_gc_pauses": sim_paused[:10],
    }


@pytest.mark.parametrize("n", SIZES)
def test_fleet(scratch: Path, n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard, 4 * n + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the server inherits it
    data_dir = scratch / f"fleet-{n}-{secrets.token_hex(3)}" / "data"
    data_dir.parent.mkdir(mode=0o711)
    server = start_server(data_dir, env={"BEEYARD_ADMIN_PASSWORD": PASSWORD})
    try:
        server.wait_ready()
        resp = server.login(PASSWORD)
        assert resp.status == 200, resp.body
        cookie = "; ".join(c.split(";", 1)[0] for c in resp.headers.get_all("Set-Cookie") or [])
        result = asyncio.run(simulate(server, EmbeddedPostgres(data_dir), n, cookie))
    finally:
        server.stop()
        stop_postgres(data_dir)
        warnings = [line for line in server.output().splitlines() if "WARNING" in line]
        print(f"\nserver warnings ({len(warnings)}):", *warnings[:20], sep="\n  ")
    lat = result.pop("latency")
    print(f"\nfleet N={n}, {result['window_s']:.0f} s window, load {result.pop('load')}")
    for k, v in result.items():
        print(f"  {k:<24} {v:.3f}" if isinstance(v, float) else f"  {k:<24} {v}")
    print("  latency (send -> browser socket):",
          {k: (f"{v * 1e3:.1f} ms" if isinstance(v, float) else v) for k, v in lat.items()})
