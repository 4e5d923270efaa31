"""End to end with real processes: a ``beeyard-server`` and a ``beeyard-agent`` enrolled
with a real code, linked, rotated over the link, and stopped cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from tests.serverproc import ServerProcess, clean_env, request, running_server

PASSWORD = "end to end passphrase"


def _agent(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "beeyard.agent.cli", *args], stdin=subprocess.DEVNULL,
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=clean_env(),
    )


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[ServerProcess]:
    with running_server(tmp_path / "server", env={
        "BEEYARD_DATABASE_URL": database_url, "BEEYARD_ADMIN_PASSWORD": PASSWORD,
        "BEEYARD_AGENT_HEARTBEAT": "2",
    }) as proc:
        yield proc


def _admin(server: ServerProcess) -> dict[str, str]:
    resp = server.login(PASSWORD)
    assert resp.status == 200, resp.body
    cookie = resp.headers["Set-Cookie"].split(";", 1)[0]
    return {"Cookie": cookie, "X-CSRF-Token": resp.json()["data"]["csrf_token"]}


async def _until(db: asyncpg.Connection, sql: str, *args: object, timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = await db.fetchval(sql, *args)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for: {sql}"
        await asyncio.sleep(0.1)


async def test_real_agent_enrolls_links_rotates_and_leaves(
    server: ServerProcess, tmp_path: Path, db: asyncpg.Connection
) -> None:
    admin = _admin(server)
    resp = request(server.port, "POST", "/api/agent/enrollments", {}, headers=admin)
    assert resp.status == 201, resp.body
    code = resp.json()["data"]["code"]
    config, token_file = tmp_path / "agent.toml", tmp_path / "token"
    enroll = subprocess.run(
        [sys.executable, "-m", "beeyard.agent.cli", "enroll",
         "--server", f"http://127.0.0.1:{server.port}", "--code", code, "--name", "e2e",
         "--config", str(config), "--token-file", str(token_file),
         "--spool-dir", str(tmp_path / "spool")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=clean_env(), timeout=60,
        check=False,
    )
    assert enroll.returncode == 0, enroll.stdout + enroll.stderr
    token = token_file.read_text().strip()
    assert token.startswith("bag_") and os.stat(token_file).st_mode & 0o077 == 0
    server_id = await db.fetchval("SELECT id FROM servers WHERE name = 'e2e'")
    assert server_id is not None

    log = tmp_path / "agent.log"
    agent = _agent(["run", "--config", str(config)], log)
    try:
        first = await _until(db, "SELECT connected_at FROM servers WHERE id = $1", server_id)
        assert await db.fetchval("SELECT agent_version FROM servers WHERE id = $1", server_id)

        resp = request(server.port, "POST", f"/api/agent/{server_id}/rotate-token",
                       headers=admin)
        assert resp.status == 200, resp.body
        assert resp.json()["data"] == {"server_id": server_id, "delivered": True}
        assert token_file.read_text().strip() != token
        # The agent comes back with the new token (the old one is refused).
        await _until(db, "SELECT connected_at > $2 FROM servers WHERE id = $1", server_id, first)
        gone = request(server.port, "GET", "/api/agent/ws",
                       headers={"Authorization": f"Bearer {token}"})
        assert gone.status == 401 and gone.json()["code"] == "unknown_token"
        await asyncio.sleep(2)  # a few samples for the last partial summary
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(10)
    assert agent.returncode == 0, log.read_text()
    # On a clean stop the agent sends its partial minute: committed by the server.
    await _until(db, "SELECT count(*) FROM metrics_minute WHERE server_id = $1", server_id,
                 timeout=10)
