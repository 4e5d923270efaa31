"""Web terminal: keystroke round trip and output throughput, end to end.

The path measured is the whole relay: a WebSocket client (as the browser) → the
server's /api/ws/terminal socket → the agent link → a real agent process → its
PTY → the shell → back the same way. The server runs in the benchmark's process
and event loop, with the client; the agent is its own process.

- Round trip: the shell runs ``stty raw -echo; exec cat``, so every byte typed is
  written back by ``cat`` (a process wake-up, as a shell's echo would be); one
  key at a time, the next sent when the previous came back. p50/p99 over
  ``BEEYARD_BENCH_KEYS`` keys (default 2000) after 200 of warm-up.
- Throughput: ``cat`` of a ``BEEYARD_BENCH_MB`` MB text file (default 200 MB) in
  the terminal, MB/s of terminal output received by the client.

Run: ``/tmp/v/bin/python -m pytest -m bench -p no:randomly -s tests/bench/test_terminal.py``;
results in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest
from tests.conftest import Api
from tests.operations.conftest import MakeHost, agent_host  # noqa: F401 - fixture
from tests.operations.terminal_client import open_terminal

pytestmark = pytest.mark.bench

KEYS = int(os.environ.get("BEEYARD_BENCH_KEYS", "2000"))
WARMUP = 200
MB = int(os.environ.get("BEEYARD_BENCH_MB", "200"))


async def test_keystroke_round_trip(api: Api, agent_host: MakeHost) -> None:  # noqa: F811
    host = await agent_host(capabilities=["terminal"], terminal={"shell": "/bin/sh"})
    term = await open_terminal(api, host.server_id)
    await term.type("stty raw -echo; echo READY-$((1+1)); exec cat\r")
    await term.read_until(r"READY-2")
    ws = term.ws
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789"
    times = []
    for i in range(WARMUP + KEYS):
        key = alphabet[i % len(alphabet):][:1]
        start = time.perf_counter()
        await ws.send_bytes(key)
        got = b""
        while key not in got:
            msg = await ws.receive()
            assert isinstance(msg.data, bytes), msg
            got += msg.data
        if i >= WARMUP:
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    p50 = statistics.median(times)
    p99 = times[int(len(times) * 0.99) - 1]
    print(f"\nkeystroke round trip over {len(times)} keys: p50 {p50:.2f} ms, "
          f"p90 {times[int(len(times) * 0.9) - 1]:.2f} ms, p99 {p99:.2f} ms, "
          f"max {times[-1]:.2f} ms")
    await ws.close()
    assert p50 > 0


async def test_output_throughput(api: Api, agent_host: MakeHost,  # noqa: F811
                                 tmp_path: Path) -> None:
    line = (b"0123456789" * 9 + b"abcdefghi\n")  # 100-byte lines of text
    big = tmp_path / "big.txt"
    with big.open("wb") as f:
        block = line * 10_000  # 1 MB
        for _ in range(MB):
            f.write(block)
    host = await agent_host(capabilities=["terminal"], terminal={"shell": "/bin/sh"})
    term = await open_terminal(api, host.server_id, cols=200, rows=50)
    await term.type("echo READY-$((1+1))\r")
    await term.read_until(r"READY-2")
    await term.type(f"cat {big}; echo DONE-$((2+2))\r")
    ws = term.ws
    received = 0
    start = time.perf_counter()
    tail = b""
    while b"DONE-4" not in tail:
        msg = await ws.receive()
        assert isinstance(msg.data, bytes), msg
        received += len(msg.data)
        tail = (tail + msg.data)[-64:]
    took = time.perf_counter() - start
    print(f"\ncat of {MB} MB: {received / 1e6:.0f} MB of terminal output in {took:.2f} s: "
          f"{received / 1e6 / took:.0f} MB/s")
    await ws.close()
    assert received >= MB * 1_000_000
