"""The agent's dispatcher in this process, fed frames the way its link reads them:
several in one read (no turn of the event loop between them), a cancel repeated
(the server's, then the link's loss), request-and-cancel cycles from a hostile
server. Real handlers, real processes and threads; only the socket is left out,
so the order of frames within one read is exact."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beeyard.agent.config import AgentConfig, SpoolConfig
from beeyard.agent.operations import MAX_CALLS, Dispatcher
from beeyard.agent.operations import traceroute as traceroute_op
from beeyard.shared import wire


class Agent:
    """A dispatcher and the frames it sent back."""

    def __init__(self, tmp_path: Path, *capabilities: str) -> None:
        self.sent: list[wire.Frame] = []
        config = AgentConfig(server="https://beeyard.invalid", server_id=1,
                             token_file=tmp_path / "token", spool=SpoolConfig(tmp_path / "spool"),
                             capabilities=capabilities)
        self.calls = Dispatcher(config, self._send)

    async def _send(self, data: bytes) -> None:
        self.sent.append(wire.decode(data))

    def frame(self, frame_type: str, body: dict[str, Any], call_id: int) -> None:
        self.calls.handle(wire.decode(wire.encode(frame_type, body, id=call_id)))

    def replies(self, call_id: int) -> list[dict[str, Any]]:
        return [f.body for f in self.sent if f.type == "reply" and f.id == call_id]

    async def reply(self, call_id: int, within: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while not self.replies(call_id):
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        found = self.replies(call_id)
        assert len(found) == 1, found
        return found[0]


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def test_a_call_cancelled_in_the_read_that_opened_it_is_answered_and_frees_its_slot(
    tmp_path: Path
) -> None:
    agent = Agent(tmp_path, "traceroute")
    for call_id in range(1, MAX_CALLS + 2):  # request and cancel in one read, each time
        agent.frame("request", {"op": "traceroute.run", "args": {"target": "127.0.0.1"}},
                    call_id)
        agent.frame("cancel", {"reason": "the browser went away"}, call_id)
    for call_id in range(1, MAX_CALLS + 1):
        assert (await agent.reply(call_id))["error"] == "cancelled"
    assert len(agent.calls) == 0
    # input a call does not take, in the same read as its request: refused with why
    agent.frame("request", {"op": "traceroute.run", "args": {"target": "127.0.0.1"}}, 1000)
    agent.frame("data", {"data": b"x"}, 1000)
    body = await agent.reply(1000)
    assert body["error"] == "invalid" and "takes no input" in body["reason"]
    # and the agent still runs calls: no slot was kept by the calls that never started
    agent.frame("request", {"op": "traceroute.run", "args": {"target": "127.0.0.1",
                                                             "max_hops": 2}}, 1001)
    body = await agent.reply(1001)
    assert body["ok"] is True and body["result"]["reached"] is True
    assert len(agent.calls) == 0


async def test_a_second_cancel_does_not_spare_a_command_that_ignores_sigterm(
    tmp_path: Path
) -> None:
    agent = Agent(tmp_path, "exec")
    pid_file = tmp_path / "pid"
    script = f"trap '' TERM; echo $$ > {pid_file}; exec sleep 60"
    agent.frame("request", {"op": "exec.run", "args": {"argv": ["/bin/sh", "-c", script]},
                            "window": 1 << 20}, 1)
    async with asyncio.timeout(10):
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.02)
    pid = int(pid_file.read_text())
    try:
        agent.frame("cancel", {"reason": "a user cancelled"}, 1)
        await asyncio.sleep(0.2)  # SIGTERM sent, ignored; SIGKILL is due after the grace
        agent.frame("cancel", {"reason": "the link was lost"}, 1)
        assert (await agent.reply(1))["error"] == "cancelled"
        async with asyncio.timeout(10):
            while _alive(pid):
                await asyncio.sleep(0.05)
    finally:
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def silent_port() -> Iterator[None]:
    """Something listening where a one-hop probe to 127.0.0.1 goes, answering nothing:
    each probe waits its whole timeout."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", traceroute_op.BASE_PORT + 1))
    yield
    sock.close()


def _trace_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "traceroute")


async def test_cancelled_traceroutes_keep_their_slot_until_their_thread_ends(
    tmp_path: Path, silent_port: None
) -> None:
    agent = Agent(tmp_path, "traceroute")
    args = {"target": "127.0.0.1", "max_hops": 1, "timeout": 2.0}
    errors = []
    for call_id in range(1, 3 * traceroute_op.MAX_RUNNING + 1):
        agent.frame("request", {"op": "traceroute.run", "args": args}, call_id)
        await asyncio.sleep(0.02)  # the handler runs and starts its thread
        agent.frame("cancel", {}, call_id)
        errors.append((await agent.reply(call_id))["error"])
        assert _trace_threads() <= traceroute_op.MAX_RUNNING
    assert errors.count("cancelled") == traceroute_op.MAX_RUNNING
    assert set(errors) == {"cancelled", "busy"}
    async with asyncio.timeout(10):  # each thread ends with its probe's timeout
        while _trace_threads():
            await asyncio.sleep(0.05)
    agent.frame("request", {"op": "traceroute.run", "args": args}, 100)
    await asyncio.sleep(0.02)
    agent.frame("cancel", {}, 100)
    assert (await agent.reply(100))["error"] == "cancelled"  # not busy: the slots came back
