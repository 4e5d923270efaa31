"""The web terminal end to end: a browser-like WebSocket client, the in-process server,
a real agent process and a real shell on a real PTY.

Round trip, resize, exit, Ctrl-C, the configured user, and every way a session ends:
the shell exits, the socket closes, the agent stops, the session idles out. Each of
those must leave no process of the shell's session behind within 2 s."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from tests.conftest import Api
from tests.operations.conftest import MakeHost
from tests.operations.terminal_client import alive, open_terminal, wait_dead

from beeyard.agent.config import TerminalConfig

SH = {"shell": "/bin/sh"}
PIDS = r"PIDS:(\d+):(\d+)\b"
WAIT_WINCH = ("import os, signal; signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGWINCH]); "
              "print(\"READY-%d\" % 1, flush=True); signal.sigwait([signal.SIGWINCH]); "
              "s = os.get_terminal_size(); print(\"GOT-WINCH %dx%d\" % (s.lines, s.columns))")


async def start_background(term: Any) -> list[int]:
    """Run ``sleep 1000 &`` in the shell; the shell's and the sleep's pids."""
    await term.type("sleep 1000 & echo PIDS:$$:$!\r")
    match = await term.read_until(PIDS)
    pids = [int(match.group(1)), int(match.group(2))]
    assert alive(pids) == pids
    return pids


async def audit_rows(db: asyncpg.Connection, server_id: int) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT action, outcome, actor, status, detail FROM audit_logs "
                          "WHERE target = $1 AND action IN ('terminal.start', 'terminal.end') "
                          "ORDER BY id",
                          f"server:{server_id}")
    return [dict(r) | {"detail": _json(r["detail"])} for r in rows]


def _json(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


async def test_echo_round_trip_then_exit_ends_the_session_with_audit(
        api: Api, agent_host: MakeHost, db: asyncpg.Connection) -> None:
    host = await agent_host(capabilities=["terminal"], terminal={"shell": "/bin/bash"})
    term = await open_terminal(api, host.server_id)
    await term.type("echo hello-$((6*7))\r")
    await term.read_until(r"hello-42")
    pids = await start_background(term)
    await term.type("exit 3\r")
    end = await term.until_closed()
    assert end["type"] == "exit" and end["ended"] == "exit" and end["exit_status"] == 3, end
    assert end["bytes_out"] == len(term.output) and end["bytes_in"] > 20
    assert term.ws.close_code == 1000
    await wait_dead(pids, 2.0)  # the background sleep went with the shell

    await asyncio.sleep(0.2)  # the end record is written after the close
    rows = await audit_rows(db, host.server_id)
    token = await db.fetchrow("SELECT outcome, action FROM audit_logs WHERE action = "
                              "'terminal.token' AND target = $1", f"server:{host.server_id}")
    assert token is not None and token["outcome"] == "success"
    assert [(r["action"], r["outcome"], r["actor"]) for r in rows] == [
        ("terminal.start", "success", "admin"), ("terminal.end", "success", "admin")]
    end_detail = rows[1]["detail"]
    assert end_detail["ended"] == "exit" and end_detail["exit_status"] == 3
    assert end_detail["bytes_out"] == len(term.output)  # output, host to browser
    assert end_detail["bytes_in"] == end["bytes_in"]  # keys, browser to host
    assert end_detail["duration"] > 0


async def test_resize_reaches_the_shell_and_ctrl_c_the_foreground_job(
        api: Api, agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["terminal"], terminal=SH)
    term = await open_terminal(api, host.server_id, cols=90, rows=20)
    await term.type("stty size\r")
    await term.read_until(r"\b20 90\b")
    await term.resize(132, 41)
    await term.type("stty size\r")
    await term.read_until(r"\b41 132\b")
    # The foreground job gets SIGWINCH when the size changes.
    await term.type(f"{sys.executable} -c '{WAIT_WINCH}'\r")
    await term.read_until(r"READY-\d")
    await term.resize(100, 30)
    await term.read_until(r"GOT-WINCH 30x100", within=5)
    # A bad control message is answered, and the session goes on.
    await term.ws.send_str('{"type": "resize", "cols": 0, "rows": 5}')
    await term.type("echo still-$((2+3))\r")
    await term.read_until(r"still-5")
    assert any(c["type"] == "error" and "cols" in c["error"] for c in term.controls)
    # The PTY is the shell's controlling terminal: Ctrl-C interrupts the foreground job.
    await term.type("sleep 100; echo not-interrupted\r")
    await asyncio.sleep(0.3)
    await term.type(b"\x03")
    await term.type("echo after-$((1+1))\r")
    await term.read_until(r"after-2")
    assert b"\nnot-interrupted" not in term.output  # only the echo of the typed line
    await term.ws.close()


async def test_closing_the_socket_kills_the_whole_session_within_2s(
        api: Api, agent_host: MakeHost, db: asyncpg.Connection) -> None:
    host = await agent_host(capabilities=["terminal"], terminal={"shell": "/bin/bash"})
    term = await open_terminal(api, host.server_id)
    pids = await start_background(term)
    # a job that ignores SIGHUP must be killed all the same
    await term.type("(trap '' HUP; exec sleep 999) & echo PIDS:$$:$!\r")
    pids.append(int((await term.read_until(PIDS)).group(2)))
    await term.ws.close()
    took = await wait_dead(pids, 2.0)
    assert took < 2.0
    rows = await audit_rows(db, host.server_id)
    for _ in range(100):
        if rows[-1]["action"] == "terminal.end":
            break
        await asyncio.sleep(0.05)
        rows = await audit_rows(db, host.server_id)
    assert rows[-1]["action"] == "terminal.end"
    assert rows[-1]["detail"]["ended"] == "browser_closed"
    assert rows[-1]["detail"]["bytes_out"] > 0 and rows[-1]["detail"]["bytes_in"] > 0


async def test_losing_the_link_kills_the_session(api: Api, agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["terminal"], terminal=SH)
    term = await open_terminal(api, host.server_id)
    pids = await start_background(term)
    started = time.monotonic()
    await asyncio.to_thread(host.stop)  # SIGTERM: the link closes, every call is cancelled
    await wait_dead(pids, 2.5)
    assert time.monotonic() - started < 4.5
    end = await term.until_closed()
    assert end["type"] == "error" and end["code"] in ("lost", "cancelled"), end
    assert "terminal: session of pid" in host.output()


async def test_idle_sessions_end(api: Api, agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["terminal"], terminal={**SH, "idle_timeout": 1})
    term = await open_terminal(api, host.server_id)
    pids = await start_background(term)
    end = await term.until_closed(within=10)
    assert end["type"] == "exit" and end["ended"] == "idle", end
    assert b"closed after 1 s without input or output" in term.output
    await wait_dead(pids, 2.0)


async def test_the_session_cap_answers_busy(api: Api, agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["terminal"], terminal={**SH, "max_sessions": 1})
    first = await open_terminal(api, host.server_id)
    await first.type("echo one-$((0+1))\r")
    await first.read_until(r"one-1")
    second = await open_terminal(api, host.server_id)
    end = await second.until_closed()
    assert end == {"type": "error", "code": "busy", "status": 429, "error": end["error"]}
    assert "terminal.max_sessions" in end["error"]
    assert second.ws.close_code == 4429
    await first.ws.close()
    await asyncio.sleep(0.5)  # the first session's end reached the agent
    third = await open_terminal(api, host.server_id)
    await third.type("echo three-$((1+2))\r")
    await third.read_until(r"three-3")
    await third.ws.close()


async def test_the_shell_runs_as_the_configured_user_with_a_clean_environment(
        api: Api, agent_host: MakeHost) -> None:
    host = await agent_host(capabilities=["terminal"], terminal={**SH, "user": "nobody"},
                            env={"BEEYARD_SECRET_FOR_TEST": "leak"})
    term = await open_terminal(api, host.server_id)
    await term.type("echo U=$(id -un):$(id -u):$(id -g):$HOME:$USER:$TERM:"
                    "${BEEYARD_SECRET_FOR_TEST:-none}:$(ps -o sid= -p $$)=$$\r")
    match = await term.read_until(r"U=(\S+):(\d+):(\d+):(\S+):(\S+):(\S+):(\S+):\s*(\d+)=(\d+)")
    user, uid, _gid, home, env_user, term_name, secret, sid, pid = match.groups()
    assert (user, uid, env_user) == (b"nobody", b"65534", b"nobody")
    assert home == b"/"  # nobody's home (/nonexistent) does not exist
    assert term_name == b"xterm-256color" and secret == b"none"
    assert sid == pid  # the shell leads its own session
    await term.ws.close()


async def test_refusals_of_the_agent_itself(api: Api, agent_host: MakeHost,
                                            client: TestClient[Any, Any]) -> None:
    host = await agent_host(capabilities=["terminal"], terminal={"user": "no-such-user-x"})
    term = await open_terminal(api, host.server_id)
    end = await term.until_closed()
    assert end["code"] == "unavailable" and end["status"] == 503
    assert "no-such-user-x" in end["error"]


def test_output_is_not_mistaken_for_a_prompt() -> None:
    """The regexes above match output, not the echo of what was typed."""
    assert re.search(PIDS.encode(), b"sleep 1000 & echo PIDS:$$:$!") is None


def test_the_documented_terminal_defaults_are_the_real_ones() -> None:
    """docs/agent.md lists the [terminal] keys with their defaults; they must be the code's."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text()
    rows = dict(re.findall(r"^\| `\[terminal\] (\w+)` \| `([^`]*)`", docs, re.M))
    defaults = {f.name: f.default for f in dataclasses.fields(TerminalConfig)}
    assert set(rows) == set(defaults)
    for name, shown in rows.items():
        assert shown.strip('"') == str(defaults[name]), (name, shown)


async def test_a_browser_that_vanishes_without_closing_ends_the_session(
        api: Api, agent_host: MakeHost, db: asyncpg.Connection) -> None:
    """A killed tab or a dead network sends no close frame: the connection just drops."""
    host = await agent_host(capabilities=["terminal"], terminal=SH)
    term = await open_terminal(api, host.server_id)
    pids = await start_background(term)
    transport = term.ws._conn.transport  # type: ignore[attr-defined]
    assert transport is not None
    transport.abort()
    await wait_dead(pids, 2.0)
    for _ in range(100):
        ended = await db.fetchval("SELECT detail->>'ended' FROM audit_logs WHERE action = "
                                  "'terminal.end' AND target = $1", f"server:{host.server_id}")
        if ended:
            break
        await asyncio.sleep(0.05)
    assert ended == "browser_closed"
