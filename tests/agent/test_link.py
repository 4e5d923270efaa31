"""The agent's link, end to end: a real ``beeyard-agent run`` process against a real
local server speaking the protocol (tests/agent/peer.py), on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from tests.agent.peer import AgentPeer, AgentProcess, self_signed, write_config

from beeyard.agent.spool import Spool
from beeyard.agent.token import read_token
from beeyard.shared import wire

pytestmark = pytest.mark.slow




def start(agents: list[AgentProcess], peer: AgentPeer, tmp_path: Path, **config: Any) -> (
        AgentProcess):
    path = write_config(tmp_path, peer.url, peer.token, **config)
    agent = AgentProcess(path, tmp_path / "agent.log")
    agents.append(agent)
    return agent


async def until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_hello_welcome_then_samples(peer: AgentPeer, agents: list[AgentProcess],
                                          tmp_path: Path) -> None:
    start(agents, peer, tmp_path)
    samples = await peer.wait_for("sample", count=3)
    hello = peer.frames[0].frame
    assert hello.type == "hello"
    assert hello.body["protocol"] == wire.PROTOCOL_VERSION
    assert hello.body["capabilities"] == []
    assert hello.body["interval"] == 1.0
    assert hello.body["host"]["cores"] >= 1
    stamps = [s.frame.body["ts"] for s in samples]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] >= 1.5
    assert all(s.frame.body["metrics"]["memory"]["total"] > 0 for s in samples)


async def test_heartbeats_both_ways(peer: AgentPeer, agents: list[AgentProcess],
                                    tmp_path: Path) -> None:
    start(agents, peer, tmp_path)
    await peer.wait_for("ping", count=2)  # the agent pings every heartbeat (1 s here)
    await peer.send("ping", {"ts": 123.5})
    pongs = await peer.wait_for("pong")
    assert pongs[0].frame.body == {"ts": 123.5}


async def test_samples_stand_in_for_pings_when_they_are_more_frequent(
    peer: AgentPeer, agents: list[AgentProcess], tmp_path: Path
) -> None:
    """At 1 s samples and 2 s heartbeats every heartbeat carries a sample: no ping (and
    so no pong waking the agent), and no pong to the server's pings either (the samples
    answer them); the link stays up on the server's own pings."""
    peer.heartbeat = 2.0
    start(agents, peer, tmp_path)
    await peer.wait_connections(1)
    for _ in range(5):  # the server's pings, as beeyard-server sends them
        await asyncio.sleep(1.5)
        await peer.send("ping", {"ts": 2.5})
    await asyncio.sleep(0.5)
    types = [r.frame.type for r in peer.frames]
    assert types.count("sample") >= 5
    assert "ping" not in types and "pong" not in types
    assert peer.connections == 1


async def test_a_silent_server_is_a_dead_link_within_three_heartbeats(
    peer: AgentPeer, agents: list[AgentProcess], tmp_path: Path
) -> None:
    peer.answer_pings = False  # after welcome the server sends nothing at all
    agent = start(agents, peer, tmp_path)
    await peer.wait_connections(1)
    first = time.monotonic()
    await peer.wait_connections(2, timeout=30)
    assert time.monotonic() - first >= 2.5  # not before three 1 s heartbeats passed
    assert "no frame from the server for 3 s" in agent.output()


async def test_reconnects_after_the_server_closes(peer: AgentPeer, agents: list[AgentProcess],
                                                  tmp_path: Path) -> None:
    agent = start(agents, peer, tmp_path)
    await peer.wait_for("sample", conn=1)
    assert peer.current is not None
    await peer.current.close()
    await peer.wait_for("sample", conn=2)
    assert "lost the link" in agent.output()


async def test_server_errors_on_upgrade_are_retried(peer: AgentPeer,
                                                    agents: list[AgentProcess],
                                                    tmp_path: Path) -> None:
    peer.refuse_status, peer.refuse_message = 503, "starting up"
    agent = start(agents, peer, tmp_path)
    await until(lambda: peer.upgrades_refused >= 2)
    peer.refuse_status = None
    await peer.wait_for("sample", timeout=30)
    assert "HTTP 503: starting up" in agent.output()
    assert agent.proc.poll() is None


async def test_401_on_upgrade_stops_with_the_reason(peer: AgentPeer,
                                                    agents: list[AgentProcess],
                                                    tmp_path: Path) -> None:
    peer.refuse_status, peer.refuse_message = 401, "token revoked"
    agent = start(agents, peer, tmp_path)
    assert await agent.wait() == 3
    assert "HTTP 401: token revoked" in agent.output()
    assert peer.upgrades_refused == 1  # no retry
    assert peer.connections == 0


async def test_bye_without_retry_stops_with_the_reason(peer: AgentPeer,
                                                       agents: list[AgentProcess],
                                                       tmp_path: Path) -> None:
    agent = start(agents, peer, tmp_path)
    await peer.wait_for("sample")
    await peer.send("bye", {"code": "revoked", "reason": "revoked by admin", "retry": False})
    assert await agent.wait() == 3
    assert "revoked: revoked by admin" in agent.output()
    await asyncio.sleep(1.5)
    assert peer.connections == 1


async def test_bye_with_retry_reconnects(peer: AgentPeer, agents: list[AgentProcess],
                                         tmp_path: Path) -> None:
    start(agents, peer, tmp_path)
    await peer.wait_for("sample")
    await peer.send("bye", {"code": "replaced", "reason": "server restarting", "retry": True})
    await peer.wait_for("sample", conn=2)


async def test_rotate_token(peer: AgentPeer, agents: list[AgentProcess],
                            tmp_path: Path) -> None:
    start(agents, peer, tmp_path)
    await peer.wait_for("sample")
    old = peer.token
    new = "bag_" + "n" * 43
    await peer.send("rotate_token", {"token": new}, id=99)
    [stored] = await peer.wait_for("token_stored")
    assert stored.frame.id == 99
    token_file = tmp_path / "agent.token"
    assert read_token(token_file) == new  # on disk before the answer
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    peer.tokens = {new}  # the old token stops working at once
    assert peer.current is not None
    await peer.current.close()
    await peer.wait_for("sample", conn=2)  # reconnected with the new token
    assert peer.upgrades_refused == 0
    assert old not in peer.tokens


async def test_bad_frames_are_logged_and_ignored(peer: AgentPeer, agents: list[AgentProcess],
                                                 tmp_path: Path) -> None:
    agent = start(agents, peer, tmp_path)
    await peer.wait_for("sample")
    assert peer.current is not None
    await peer.send_raw(b"\xc1\xff garbage")
    await peer.send_raw(msgpack.packb([1, 2, 3]))
    await peer.send_raw(msgpack.packb({"t": "launch_missiles", "b": {}}))
    await peer.send_raw(msgpack.packb({"t": "ack", "b": {"minutes": []}}))
    await peer.send_raw(msgpack.packb({"t": "rotate_token", "b": {"token": "short"}}))
    await peer.send_raw(b"")
    await peer.current.send_str("text is not a frame")
    await peer.send("welcome", {"server_id": 7, "protocol": "1.0", "heartbeat": 1.0})
    await peer.send("ping", {"ts": 1.0})
    await peer.wait_for("pong")  # still on the same link, still answering
    assert peer.connections == 1
    assert agent.proc.poll() is None
    log = agent.output()
    assert "ignored a bad frame from the server: not a msgpack message" in log
    assert read_token(tmp_path / "agent.token") == peer.token  # the bad rotation did nothing


async def test_an_oversize_frame_closes_the_link_and_the_agent_reconnects(
    peer: AgentPeer, agents: list[AgentProcess], tmp_path: Path
) -> None:
    agent = start(agents, peer, tmp_path)
    await peer.wait_for("sample")
    with contextlib.suppress(ConnectionError):  # the agent may hang up mid-write
        await peer.send_raw(b"\x00" * (wire.MAX_FRAME + 1))
    await peer.wait_for("sample", conn=2)
    assert agent.proc.poll() is None


def _spooled(tmp_path: Path, count: int) -> list[int]:
    spool = Spool(tmp_path / "spool")
    minutes = [1_700_000_040 + 60 * i for i in range(count)]
    for minute in reversed(minutes):  # stored in any order, replayed oldest first
        spool.put({"minute": minute, "samples": 60, "values": {"cpu": [5.0, 1.0, 9.0]}})
    return minutes


async def test_spool_is_replayed_after_every_reconnect_until_acked(
    peer: AgentPeer, agents: list[AgentProcess], tmp_path: Path
) -> None:
    minutes = _spooled(tmp_path, 5)
    peer.ack = False  # the server "crashes before committing": no ack
    began = int(time.time() // 60) * 60
    start(agents, peer, tmp_path)
    first = await peer.wait_for("summary", conn=1, count=5)
    assert [r.frame.body["minute"] for r in first] == minutes
    assert len(list((tmp_path / "spool").glob("*.summary"))) == 5  # kept without an ack
    assert peer.current is not None
    await peer.current.close()
    second = await peer.wait_for("summary", conn=2, count=5)
    assert [r.frame.body["minute"] for r in second][:5] == minutes
    peer.ack = True
    assert peer.current is not None
    await peer.current.close()
    await peer.wait_for("summary", conn=3, count=5)
    await until(lambda: not list((tmp_path / "spool").glob("*.summary")))
    # (the agent's own live minutes may be committed too when a minute ends meanwhile)
    assert sorted(m for m in set(peer.committed) if m < began) == minutes


async def test_sigterm_sends_the_partial_minute_and_bye(peer: AgentPeer,
                                                        agents: list[AgentProcess],
                                                        tmp_path: Path) -> None:
    agent = start(agents, peer, tmp_path)
    samples = await peer.wait_for("sample", count=2)
    agent.signal(signal.SIGTERM)
    assert await agent.wait() == 0
    types = [r.frame.type for r in peer.frames]
    assert types[-1] == "bye"
    assert peer.frames[-1].frame.body == {
        "code": "shutdown", "reason": "the agent is stopping", "retry": True}
    summary = [r.frame for r in peer.frames if r.frame.type == "summary"][-1]
    assert types[-2] == "summary"  # the partial minute, just before bye
    assert summary.body["minute"] == int(samples[-1].frame.body["ts"] // 60) * 60
    assert summary.body["samples"] >= 1


async def test_summaries_wait_in_the_spool_while_the_server_is_away(
    peer: AgentPeer, agents: list[AgentProcess], tmp_path: Path
) -> None:
    """With no server at all, stopping the agent leaves its partial minute in the
    spool; the next start replays it."""
    peer.refuse_status = 503
    agent = start(agents, peer, tmp_path)
    await until(lambda: peer.upgrades_refused >= 1)
    await asyncio.sleep(1.5)  # a sample or two
    agent.signal(signal.SIGTERM)
    assert await agent.wait() == 0
    spooled = Spool(tmp_path / "spool").pending()
    assert 1 <= len(spooled) <= 2  # two if a minute ended meanwhile
    peer.refuse_status = None
    start(agents, peer, tmp_path)
    replayed = await peer.wait_for("summary", count=len(spooled))
    assert [r.frame.body["minute"] for r in replayed][:len(spooled)] == spooled
    names = {f"{m:012d}.summary" for m in spooled}
    await until(lambda: not names & {p.name for p in (tmp_path / "spool").iterdir()})


async def test_a_second_agent_on_the_same_spool_refuses_to_start(
    peer: AgentPeer, agents: list[AgentProcess], tmp_path: Path
) -> None:
    start(agents, peer, tmp_path)
    await peer.wait_for("sample")
    second = AgentProcess(tmp_path / "agent.toml", tmp_path / "second.log")
    agents.append(second)
    assert await second.wait() == 2
    assert "another beeyard-agent is using the spool" in second.output()


async def test_wss_with_the_servers_ca(agents: list[AgentProcess], tmp_path: Path) -> None:
    """https:// server URL → wss:// link, verified against ``ca_file``; enrollment too."""
    cert, context = self_signed(tmp_path)
    peer = AgentPeer()
    await peer.start(context)
    try:
        assert peer.url.startswith("https://")
        peer.enroll_codes["tls-code"] = 9
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "beeyard.agent.cli", "enroll", "--server", peer.url,
            "--code", "tls-code", "--config", str(tmp_path / "agent.toml"),
            "--ca-file", str(cert), "--spool-dir", str(tmp_path / "spool"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        assert proc.returncode == 0, err
        agent = AgentProcess(tmp_path / "agent.toml", tmp_path / "agent.log")
        agents.append(agent)
        await peer.wait_for("sample")
        assert "connected to wss://127.0.0.1:" in agent.output()
    finally:
        await peer.stop()


async def test_an_unverifiable_certificate_is_retried_not_trusted(
    agents: list[AgentProcess], tmp_path: Path
) -> None:
    _, context = self_signed(tmp_path)
    peer = AgentPeer()
    await peer.start(context)
    try:
        agent = start(agents, peer, tmp_path)  # no ca_file: the system CAs do not know it
        await until(lambda: "CERTIFICATE_VERIFY_FAILED" in agent.output())
        assert peer.connections == 0
        assert agent.proc.poll() is None  # keeps trying: the operator may fix the CA
    finally:
        await peer.stop()


def test_the_ping_shortcut_answers_exactly_as_decode_and_encode_would() -> None:
    """pong_for (the agent's answer to a server ping without unpacking it) gives the
    bytes of wire.encode("pong") for every ping wire.encode packs, and None, so that
    wire.decode judges it, for anything else."""
    import math
    import random

    from beeyard.agent.link import pong_for

    rng = random.Random(7)
    stamps = [0.0, 1.0, 123.5, time.time(), 1e300, 5e-324,
              *(rng.uniform(0, 2e9) for _ in range(200))]
    for ts in stamps:
        ping = wire.encode("ping", {"ts": ts})
        assert pong_for(ping) == wire.encode("pong", {"ts": ts})
        assert wire.decode(pong_for(ping) or b"").body == {"ts": ts}
    for ts in (-1.0, -0.0 - 1e-9, math.nan, math.inf, -math.inf):  # wire.decode refuses these
        bad = msgpack.packb({"t": "ping", "b": {"ts": ts}}, use_bin_type=True)
        assert pong_for(bad) is None
        with pytest.raises(wire.WireError):
            wire.decode(bad)
    others = [wire.encode("pong", {"ts": 1.0}), wire.encode("ping", {"ts": 1.0}, id=3),
              msgpack.packb({"t": "ping", "b": {"ts": 1}}, use_bin_type=True),  # an int
              msgpack.packb({"b": {"ts": 1.0}, "t": "ping"}, use_bin_type=True),  # order
              wire.encode("ping", {"ts": 1.0})[:-1], wire.encode("ping", {"ts": 1.0}) + b"\0"]
    for data in others:
        assert pong_for(data) is None
