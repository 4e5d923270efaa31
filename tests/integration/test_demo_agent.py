"""``beeyard-server demo`` enrolls and runs this machine's agent (issue 3, item 7), as a
new user meets it: real processes on loopback, every one stopped by its PID.

What must hold: the first start shows this host online with metrics; SIGTERM
stops the agent before PostgreSQL, with exit 0 and no process left; a restart
re-uses the enrollment (same server id, no second server); a deleted server
makes the running agent exit (logged, the demo keeps serving) and the next
start enrolls again.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from serverproc import (
    ServerProcess,
    alive,
    clean_env,
    postgres_processes,
    request,
    running_server,
    stop_postgres,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def data_dir(scratch: Path) -> Iterator[Path]:
    path = scratch / f"demo-{secrets.token_hex(4)}" / "data"
    path.parent.mkdir(mode=0o711)
    yield path
    for pid in _agent_pids(path):  # only after a failure: the demo stops its own agent
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    stop_postgres(path)


def _agent_pids(data_dir: Path) -> list[int]:
    """Live ``beeyard-agent`` processes using this data dir's config."""
    config = str(data_dir / "agent" / "agent.toml")
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            cmd = p.info["cmdline"] or []
            if p.info["status"] != psutil.STATUS_ZOMBIE and "beeyard.agent.cli" in cmd \
                    and config in cmd:
                found.append(p.pid)
    return found


def _sign_in(server: ServerProcess) -> dict[str, str]:
    password = (server.data_dir / "initial-admin-password").read_text().strip()
    resp = server.login(password)
    assert resp.status == 200, resp.body
    return {"Cookie": resp.headers["Set-Cookie"].split(";", 1)[0],
            "X-CSRF-Token": resp.json()["data"]["csrf_token"]}


def _wait_live(server: ServerProcess, headers: dict[str, str],
               timeout: float = 60) -> list[dict[str, Any]]:
    """GET /api/servers until it lists this machine online with latest metrics."""
    deadline = time.monotonic() + timeout
    listed: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.output()
        resp = request(server.port, "GET", "/api/servers", headers=headers)
        assert resp.status == 200, resp.body
        listed = resp.json()["data"]
        if any(s["online"] and s["latest"] and s["hostname"] == socket.gethostname()
               for s in listed):
            return listed
        time.sleep(0.2)
    raise AssertionError(f"this machine is not live: {listed}\n{server.output()}")


def _wait_output(server: ServerProcess, needle: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while needle not in server.output():
        assert time.monotonic() < deadline, f"{needle!r} not in:\n{server.output()}"
        time.sleep(0.1)


def _stop_cleanly(server: ServerProcess) -> None:
    agents = _agent_pids(server.data_dir)
    assert len(agents) == 1, agents
    assert server.stop() == 0, server.output()
    assert not alive(agents[0])
    assert _agent_pids(server.data_dir) == []
    assert postgres_processes(server.data_dir) == []


def test_demo_shows_this_machine_live_and_reuses_its_enrollment(data_dir: Path) -> None:
    with running_server(data_dir, command="demo") as server:
        headers = _sign_in(server)
        listed = _wait_live(server, headers)
        assert len(listed) == 1
        server_id = listed[0]["id"]
        _wait_output(server, f"This machine ({socket.gethostname()}) is enrolled as server "
                             f"{server_id} and live at http://127.0.0.1:{server.port}/")
        # The printed hint works as printed: the terminal is granted and the server told.
        _wait_output(server, "To try the web terminal for half an hour: ")
        hint = server.output().split("To try the web terminal for half an hour: ", 1)[1]
        granted = subprocess.run(shlex.split(hint.splitlines()[0]), capture_output=True,
                                 text=True, timeout=60, check=False, env=clean_env())
        assert granted.returncode == 0, granted.stdout + granted.stderr
        deadline = time.monotonic() + 30
        while True:
            one = request(server.port, "GET", f"/api/servers/{server_id}", headers=headers)
            if "terminal" in one.json()["data"]["capabilities"]:
                break
            assert time.monotonic() < deadline, one.body
            time.sleep(0.2)
        # Nothing outside the data directory: config, token (0600) and spool are in it.
        agent_dir = data_dir / "agent"
        assert (agent_dir / "agent.toml").is_file()
        assert (agent_dir / "agent.token").stat().st_mode & 0o077 == 0
        assert (agent_dir / "spool").is_dir()
        _stop_cleanly(server)
        assert "agent: stopped" in server.output()  # it said goodbye before the database went

    # The same data dir on another port: the enrollment is re-used, the config follows.
    with running_server(data_dir, command="demo") as server:
        headers = _sign_in(server)
        listed = _wait_live(server, headers)
        assert [s["id"] for s in listed] == [server_id]
        assert f"re-using the demo agent's enrollment as server {server_id}" in server.output()
        assert f"127.0.0.1:{server.port}" in (agent_dir / "agent.toml").read_text()

        # Deleting the server refuses the agent for good: logged, and the demo keeps serving.
        gone = request(server.port, "DELETE", f"/api/servers/{server_id}", headers=headers)
        assert gone.status == 200, gone.body
        deadline = time.monotonic() + 30
        while _agent_pids(data_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _agent_pids(data_dir) == []
        _wait_output(server, "exited with code 3 (the server refused it)")
        assert request(server.port, "GET", "/api/health").status == 200
        assert server.stop() == 0, server.output()

    # Next start: the record is gone, so the machine is enrolled again as a new server.
    with running_server(data_dir, command="demo") as server:
        headers = _sign_in(server)
        listed = _wait_live(server, headers)
        assert len(listed) == 1 and listed[0]["id"] != server_id
        _stop_cleanly(server)
