"""Graceful shutdown: SIGTERM and Ctrl-C (SIGINT) stop the server with exit code 0,
let in-flight requests finish, and leave no PostgreSQL of the data dir running,
even when the signal arrives while the database is still starting."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from beeyard.server.app import create_app
from beeyard.server.auth.principal import Access
from beeyard.server.config import Settings
from beeyard.server.http.envelope import ok
from beeyard.server.http.routing import install, route
from serverproc import free_port, postgres_processes, postmaster_pid, start_server, stop_postgres

pytestmark = pytest.mark.slow


@pytest.fixture
def data_dir(scratch: Path) -> Iterator[Path]:
    path = scratch / f"stop-{secrets.token_hex(4)}" / "data"
    path.parent.mkdir(mode=0o711)
    yield path
    stop_postgres(path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly(data_dir: Path, sig: signal.Signals) -> None:
    server = start_server(data_dir)
    try:
        server.wait_ready()
        pg = postmaster_pid(data_dir)
        assert pg is not None
        assert server.stop(sig) == 0
        out = server.output()
        assert "embedded PostgreSQL stopped" in out
        assert "Traceback" not in out
        assert postgres_processes(data_dir) == []
        assert postmaster_pid(data_dir) is None  # PostgreSQL removed it: a clean stop
        assert not list((data_dir / "postgres" / "run").glob(".s.PGSQL.*"))
    finally:
        server.stop()


def test_sigterm_while_postgres_starts_leaves_nothing_running(data_dir: Path) -> None:
    """A stop during initdb waits for the start to finish, then stops PostgreSQL."""
    server = start_server(data_dir)
    try:
        deadline = time.monotonic() + 60
        while "creating the embedded PostgreSQL cluster" not in server.output():
            assert time.monotonic() < deadline, server.output()
            assert server.proc.poll() is None, server.output()
            time.sleep(0.01)
        assert server.stop(signal.SIGTERM) == 0, server.output()
        assert postgres_processes(data_dir) == [], server.output()
        assert "Traceback" not in server.output()
    finally:
        server.stop()
    # And the half-started directory is fine for the next start.
    again = start_server(data_dir)
    try:
        again.wait_ready()
        assert again.stop() == 0
    finally:
        again.stop()
    assert postgres_processes(data_dir) == []


async def test_in_flight_request_finishes_during_shutdown(settings: Settings) -> None:
    """What the server does on SIGTERM (aiohttp's runner clean-up with our
    shutdown_timeout): stop accepting, let running handlers finish, then close
    the pool and the database."""
    app = create_app(settings)
    started = asyncio.Event()

    @route("GET", "/api/test/slow", Access.PUBLIC, "test.slow")
    async def slow(request: web.Request) -> web.Response:
        """Test-only route."""
        started.set()
        await asyncio.sleep(1.0)
        return ok({"finished": True})

    install(app, [slow])
    runner = web.AppRunner(app, shutdown_timeout=settings.shutdown_timeout)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as client:
            call = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/api/test/slow"))
            await started.wait()
            stopping = asyncio.create_task(runner.cleanup())
            resp = await call
            assert resp.status == 200
            assert (await resp.json())["data"] == {"finished": True}
            await stopping
            with pytest.raises(aiohttp.ClientConnectionError):
                await client.get(f"http://127.0.0.1:{port}/api/health")
    finally:
        await runner.cleanup()
