"""The agent's dispatcher against a hostile server: a real ``beeyard-agent`` process
linked to the scripted peer, which sends whatever frames a buggy or malicious
server might. Whatever arrives, the agent acts only within its own config and
grants, answers each call once with a reason, and keeps its link."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
from tests.agent.peer import AgentPeer, AgentProcess, write_config

from beeyard.agent.config import FilesConfig
from beeyard.shared import wire


async def linked(agents: list[AgentProcess], peer: AgentPeer, tmp_path: Path,
                 **config: Any) -> tuple[AgentProcess, Path]:
    etc = tmp_path / "etc"  # apart from the roots: the config's directory is never reachable
    etc.mkdir()
    path = write_config(etc, peer.url, peer.token, **config)
    agent = AgentProcess(path, tmp_path / "agent.log")
    agents.append(agent)
    await peer.wait_for("sample")
    return agent, path




async def test_a_capability_the_config_lacks_is_denied_with_how_to_enable_it(
    peer: AgentPeer, agents: list[AgentProcess], tmp_path: Path
) -> None:
    (tmp_path / "root").mkdir()
    agent, _ = await linked(agents, peer, tmp_path,
                            files=FilesConfig(roots=(tmp_path / "root",)))
    await peer.send("request", {"op": "files.stat", "args": {"path": str(tmp_path / "root")}},
                    id=1)
    body = await peer.reply(1)
    assert body["ok"] is False and body["error"] == "denied"
    assert "files capability is off on this host" in body["reason"]
    assert "beeyard-agent grant files" in body["reason"]
    assert "refused files.stat" in agent.output()


async def test_a_local_grant_allows_and_its_revocation_refuses_the_next_call(
    peer: AgentPeer, agents: list[AgentProcess], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _, config = await linked(agents, peer, tmp_path, files=FilesConfig(roots=(root,)))

    def cli(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "beeyard.agent.cli", *args,
                               "--config", str(config)], capture_output=True, text=True,
                              check=False, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr

    cli("grant", "files", "--for", "30m")
    await peer.send("request", {"op": "files.stat", "args": {"path": str(root)}}, id=2)
    body = await peer.reply(2)
    assert body["ok"] is True, body
    cli("revoke", "files")
    await peer.send("request", {"op": "files.stat", "args": {"path": str(root)}}, id=3)
    assert (await peer.reply(3))["error"] == "denied"  # at once, not at the next hello


async def test_nothing_in_a_request_widens_the_policy(
    peer: AgentPeer, agents: list[AgentProcess], tmp_path: Path
) -> None:
    """The server cannot smuggle a capability, a root or a bigger size cap in a request."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    await linked(agents, peer, tmp_path, capabilities=("files",),
                 files=FilesConfig(roots=(root,)))
    await peer.send("request", {"op": "files.stat", "args": {
        "path": str(outside / "secret.txt"), "roots": [str(outside)], "capabilities": ["files"],
    }}, id=4)
    body = await peer.reply(4)
    assert body["error"] == "invalid" and "unknown fields roots" in body["reason"]  # refused
    await peer.send("request", {"op": "files.stat",
                                "args": {"path": str(outside / "secret.txt")}}, id=5)
    body = await peer.reply(5)
    assert body["error"] == "denied" and "outside" in body["reason"], body
    await peer.send("request", {"op": "files.stat", "args": {"path": str(root / ".." / "outside" /
                                                                         "secret.txt")}}, id=6)
    assert (await peer.reply(6))["error"] == "denied"


async def test_malformed_and_unknown_requests_get_one_clear_answer_and_the_link_stays(
    peer: AgentPeer, agents: list[AgentProcess], tmp_path: Path
) -> None:
    agent, _ = await linked(agents, peer, tmp_path, capabilities=("files",))
    await peer.send("request", {"op": "launch.missiles", "args": {}}, id=10)
    body = await peer.reply(10)
    assert body["error"] == "unknown_op" and "launch.missiles" in body["reason"]
    await peer.send("request", {"op": "files.nothing", "args": {}}, id=11)
    assert (await peer.reply(11))["error"] == "unknown_op"
    await peer.send("request", {"op": "files.stat", "args": {"path": 42}}, id=12)
    body = await peer.reply(12)
    assert body["error"] == "invalid" and "args.path" in body["reason"]
    # frames the decoder refuses, and frames for calls that do not exist
    await peer.send_raw(msgpack.packb({"t": "request", "b": {"op": "../etc", "args": {}},
                                       "id": 13}))
    await peer.send_raw(msgpack.packb({"t": "request", "b": {"op": "files.stat",
                                                             "args": "x"}, "id": 14}))
    await peer.send("request", {"op": "files.stat", "args": {}})  # no id: nowhere to answer
    await peer.send("data", {"data": b"x" * 1024, "eof": True}, id=999)
    await peer.send("credit", {"bytes": 1 << 20}, id=999)
    await peer.send("cancel", {"reason": "what call?"}, id=999)
    await peer.send("signal", {"name": "resize", "args": {"cols": 1}}, id=999)
    await peer.send("ping", {"ts": 1.0})
    await peer.wait_for("pong")
    assert [r.frame.id for r in peer.frames if r.frame.type == "reply"] == [10, 11, 12]
    assert agent.proc.poll() is None and peer.connections == 1


async def test_input_to_a_call_that_takes_none_ends_that_call_only(
    peer: AgentPeer, agents: list[AgentProcess], tmp_path: Path
) -> None:
    """Bytes pushed into a download are refused; the agent writes nothing."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.bin").write_bytes(b"\0" * (4 << 20))
    await linked(agents, peer, tmp_path, capabilities=("files",),
                 files=FilesConfig(roots=(root,)))
    # window 1: the download waits for credit that never comes, so the call is still open
    await peer.send("request", {"op": "files.download", "args": {"path": str(root / "big.bin")},
                                "window": 1}, id=20)
    await peer.wait_for("data")
    await peer.send("data", {"data": b"overwrite", "eof": True}, id=20)
    body = await peer.reply(20)
    assert body["error"] == "invalid" and "takes no input" in body["reason"]
    assert (root / "big.bin").read_bytes() == b"\0" * (4 << 20)
    await peer.send("request", {"op": "files.stat", "args": {"path": str(root / "big.bin")}},
                    id=21)
    assert (await peer.reply(21))["ok"] is True


async def test_empty_input_frames_end_the_call_and_write_nothing(
    peer: AgentPeer, agents: list[AgentProcess], tmp_path: Path
) -> None:
    """An empty data frame costs nothing against the window, so a flood of them would
    grow the agent's queue without bound: the first one ends the call."""
    root = tmp_path / "root"
    root.mkdir()
    await linked(agents, peer, tmp_path, capabilities=("files",),
                 files=FilesConfig(roots=(root,)))
    await peer.send("request", {"op": "files.upload", "args": {
        "path": str(root / "new.bin"), "size": 4,
        "sha256": "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"}}, id=30)
    await peer.send("data", {"data": b"", "eof": False}, id=30)
    body = await peer.reply(30)
    assert body["error"] == "invalid" and "empty data frame" in body["reason"]
    assert sorted(p.name for p in root.iterdir()) == []  # no target, no temp file


def test_the_frames_used_here_are_declared() -> None:
    assert {"request", "reply", "data", "credit", "signal", "cancel"} <= set(wire.frame_types())
