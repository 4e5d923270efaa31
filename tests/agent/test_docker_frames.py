"""Docker and traceroute requests from a hostile or buggy server, against a real agent
process linked to the scripted peer: whatever the frames say, the agent acts only
within its own capabilities, refuses arguments outside the declarations (a socket
URL, a path-like container, negative sizes) before any engine is contacted, answers
every call once, and keeps its link."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.agent.peer import AgentPeer, AgentProcess, write_config

from beeyard.agent.config import DockerConfig


async def test_docker_requests_outside_the_policy_or_the_declarations_are_refused(
        peer: AgentPeer, agents: list[AgentProcess], tmp_path: Path) -> None:
    sock = tmp_path / "no-engine.sock"
    path = write_config(tmp_path, peer.url, peer.token, capabilities=("docker_read",),
                        docker=DockerConfig(url=f"unix://{sock}", timeout=5))
    agent = AgentProcess(path, tmp_path / "agent.log")
    agents.append(agent)
    await peer.wait_for("sample")

    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"op": "docker.action", "args": {"container": "web", "action": "stop"}},
         "denied", "docker_control capability is off on this host"),
        ({"op": "traceroute.run", "args": {"target": "127.0.0.1"}},
         "denied", "traceroute capability is off"),
        ({"op": "docker.containers", "args": {"all": True, "url": "unix:///run/evil.sock"}},
         "invalid", "url"),
        ({"op": "docker.logs", "args": {"container": "../../etc/passwd"}},
         "invalid", "args.container"),
        ({"op": "docker.logs", "args": {"container": "web", "tail": -1}},
         "invalid", "args.tail"),
        ({"op": "docker.logs", "args": {"container": "web", "follow": "yes"}},
         "invalid", "args.follow"),
        ({"op": "docker.stats", "args": {"container": "a/b"}}, "invalid", "args.container"),
        ({"op": "docker.events", "args": {"since": 100, "until": 50}},
         "invalid", "is after until"),
        ({"op": "docker.events", "args": {"since": 0}}, "invalid", "at most"),
        ({"op": "docker.exec", "args": {"container": "web", "cmd": ["sh"]}},
         "unknown_op", "docker.exec"),
    ]
    for i, (body, code, words) in enumerate(cases, start=1):
        await peer.send("request", body, id=i)
        answer = await peer.reply(i)
        assert answer["ok"] is False and answer["error"] == code, (body, answer)
        assert words in answer["reason"], (body, answer)
    assert not sock.exists()
    assert "no Docker engine" not in agent.output()  # refused before any engine contact

    # a valid request still gets a real answer: no engine here, said once in the log
    for i in range(100, 105):
        await peer.send("request", {"op": "docker.info", "args": {}}, id=i)
        answer = await peer.reply(i)
        assert answer["error"] == "unavailable" and str(sock) in answer["reason"], answer
    assert agent.output().count("said at most once a minute") == 1
    assert agent.proc.poll() is None and "Traceback" not in agent.output()
