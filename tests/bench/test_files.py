"""File transfer throughput through the relay, and memory while it runs.

client ⇄ beeyard-server (in this process, the test app) ⇄ beeyard-agent (a real
process) ⇄ disk, all on loopback. A file of ``BEEYARD_BENCH_FILE_MB`` MiB (default
512) is downloaded and uploaded; the resident memory of this process (server and
client together: an upper bound for the server's) and of the agent is sampled
every 20 ms during each transfer. Streamed means flat: the growth over the
transfer must stay a small fraction of the file's size.

Run: ``/tmp/v/bin/python -m pytest -m bench -p no:randomly -s tests/bench/test_files.py``;
the figures are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import platform
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from tests.conftest import Api
from tests.operations.conftest import MakeHost, agent_host  # noqa: F401 (the fixture)
from tests.operations.files_helpers import headers

pytestmark = pytest.mark.bench

MB = 1024 * 1024
SIZE = int(os.environ.get("BEEYARD_BENCH_FILE_MB", "512")) * MB
PIECE = MB  # what the client reads or sends at a time
FLAT = 64 * MB  # most growth a streamed transfer may show, whatever the file's size


class Rss:
    """Peak resident memory of some processes, sampled in a thread."""

    def __init__(self, **pids: int) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.base = {name: p.memory_info().rss for name, p in self.procs.items()}
        self.peak = dict(self.base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for name, p in self.procs.items():
                self.peak[name] = max(self.peak[name], p.memory_info().rss)

    def __enter__(self) -> Rss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> str:
        return ", ".join(f"{name} RSS {self.base[name] / MB:.0f} → peak "
                         f"{self.peak[name] / MB:.0f} MiB (+{self.growth(name) / MB:.1f})"
                         for name in self.procs)

    def growth(self, name: str) -> int:
        return self.peak[name] - self.base[name]


def _source(path: Path) -> str:
    digest = hashlib.sha256()
    block = os.urandom(4 * MB)
    with path.open("wb") as f:
        for i in range(SIZE // len(block)):
            piece = block[:8] + i.to_bytes(8, "big") + block[16:]  # no two blocks alike
            f.write(piece)
            digest.update(piece)
    return digest.hexdigest()


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while data := await asyncio.to_thread(f.read, PIECE):
            yield data


def _machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
           f"Python {platform.python_version()}"


async def test_download_and_upload_throughput(api: Api, agent_host: MakeHost,  # noqa: F811
                                              tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    source = root / "source.bin"
    expected = await asyncio.to_thread(_source, source)
    host = await agent_host(capabilities=["files"], files={
        "roots": [str(root)], "max_read_bytes": 2 * SIZE, "max_write_bytes": 2 * SIZE})
    assert host.proc is not None
    sid = host.server_id
    results: list[str] = [f"file {SIZE // MB} MiB; {_machine()}"]

    # download: bytes streamed to the client as they come from the agent
    status, body = await api.post(f"/api/files/{sid}/download", {"path": "source.bin"})
    assert status == 201, body
    received = 0
    digest = hashlib.sha256()
    with Rss(server=os.getpid(), agent=host.proc.pid) as rss:
        started = time.perf_counter()
        async with api.client.get(body["data"]["download_url"], headers=headers(api)) as resp:
            assert resp.status == 200
            assert int(resp.headers["Content-Length"]) == SIZE
            hashing: asyncio.Future[Any] | None = None
            async for data in resp.content.iter_chunked(PIECE):
                if hashing is not None:
                    await hashing
                hashing = asyncio.ensure_future(asyncio.to_thread(digest.update, data))
                received += len(data)
            if hashing is not None:
                await hashing
        elapsed = time.perf_counter() - started
    assert received == SIZE and digest.hexdigest() == expected
    status, body = await api.get("/api/files/transfers")
    assert body["data"][0]["sha256"] == expected and body["data"][0]["state"] == "done"
    results.append(f"download {SIZE / MB / elapsed:.0f} MB/s ({elapsed:.2f} s); "
                   f"{rss.report()}")
    assert rss.growth("server") < FLAT and rss.growth("agent") < FLAT, rss.report()

    # upload: the request body streamed to the agent, which verifies it and renames
    for label, query in (("upload (sha256 given)", {"sha256": expected}),
                         ("upload (server computes sha256)", {})):
        target = f"copy-{len(results)}.bin"
        with Rss(server=os.getpid(), agent=host.proc.pid) as rss:
            started = time.perf_counter()
            async with api.client.post(
                    f"/api/files/{sid}/upload", params={"path": target, **query},
                    data=_chunks(source),
                    headers=headers(api) | {"Content-Length": str(SIZE),
                                            "Content-Type": "application/octet-stream"},
            ) as resp:
                body = await resp.json()
            elapsed = time.perf_counter() - started
        assert resp.status == 201, body
        assert body["data"]["sha256"] == expected and (root / target).stat().st_size == SIZE
        results.append(f"{label} {SIZE / MB / elapsed:.0f} MB/s ({elapsed:.2f} s); "
                       f"{rss.report()}")
        assert rss.growth("server") < FLAT and rss.growth("agent") < FLAT, rss.report()
        (root / target).unlink()
    print("\n" + "\n".join(results))
