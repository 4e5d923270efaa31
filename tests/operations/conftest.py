"""A real agent for remote-operation tests: ``beeyard-agent enroll`` and ``run`` as
processes, linked to the test's in-process server over loopback.

``agent_host(capabilities=[...], config={...})`` enrolls a fresh agent, writes the
given keys into its TOML config (the agent's own policy: what the test allows),
starts it, and returns once the server lists it online. Every process started
is stopped by its PID at the end of the test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import Api
from tests.serverproc import clean_env, stop_process

from beeyard.agent import tomlwriter


@dataclass
class AgentHost:
    """One enrolled agent process and where its files are."""

    server_id: int
    config: Path
    dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "beeyard.agent.cli", "run", "--config", str(self.config),
             "--log-level", "debug"],
            stdin=subprocess.DEVNULL, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            env=clean_env(self.env),
        )

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        return None if proc is None else stop_process(proc, grace=20)

    def configure(self, **keys: Any) -> None:
        """Set top-level keys or whole tables of the agent's config file."""
        raw = tomllib.loads(self.config.read_text())
        raw.update(keys)
        self.config.write_text(tomlwriter.dumps(raw))

    def output(self) -> str:
        return self.log.read_text(errors="replace")


async def wait_online(api: Api, server_id: int, online: bool = True,
                      timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await api.get(f"/api/servers/{server_id}")
        assert status == 200, body
        if body["data"]["online"] is online:
            return body["data"]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"server {server_id} online is not {online}"
        await asyncio.sleep(0.1)


MakeHost = Callable[..., Awaitable[AgentHost]]


@pytest.fixture
async def agent_host(client: TestClient[Any, Any], api: Api,
                     tmp_path: Path) -> AsyncIterator[MakeHost]:
    """Factory: ``await agent_host(capabilities=["files"], files={"roots": [...]})``.
    ``api`` is signed in as admin by the first call."""
    hosts: list[AgentHost] = []

    async def make(name: str | None = None, *, capabilities: list[str] | tuple[str, ...] = (),
                   env: dict[str, str] | None = None, start: bool = True,
                   **config: Any) -> AgentHost:
        if api.csrf is None:
            await api.login()
        status, body = await api.post("/api/agent/enrollments", {})
        assert status == 201, body
        name = name or f"host-{len(hosts) + 1}"
        home = tmp_path / name
        home.mkdir()
        enroll = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "beeyard.agent.cli", "enroll",
             "--server", f"http://127.0.0.1:{client.server.port}",
             "--code", body["data"]["code"], "--name", name,
             "--config", str(home / "agent.toml"), "--token-file", str(home / "token"),
             "--spool-dir", str(home / "spool")],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=clean_env(),
            timeout=60, check=False,
        )
        assert enroll.returncode == 0, enroll.stdout + enroll.stderr
        raw = tomllib.loads((home / "agent.toml").read_text())
        host = AgentHost(int(raw["server_id"]), home / "agent.toml", home, home / "agent.log",
                         env=dict(env or {}))
        host.configure(capabilities=list(capabilities), **config)
        hosts.append(host)
        if start:
            host.start()
            await wait_online(api, host.server_id)
        return host

    yield make
    for host in hosts:
        host.stop()


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive
