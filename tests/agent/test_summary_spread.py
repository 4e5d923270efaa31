"""``summary_spread``: each agent sends a just-closed minute's summary at its own point
in the next seconds, so a fleet's summaries do not all reach the server at once
(the server side of it is measured in tests/bench/test_fleet.py)."""

from __future__ import annotations

import asyncio
import collections
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from tests.agent.peer import AgentPeer, AgentProcess, write_config

from beeyard.agent import config
from beeyard.agent.link import Link, spread_offset
from beeyard.agent.spool import Spool

BASE: dict[str, Any] = {"server": "http://127.0.0.1:1", "server_id": 1, "token_file": "token"}


def link(tmp_path: Path, spread: float, offset: float | None = None) -> Link:
    cfg = config.parse({**BASE, "summary_spread": spread,
                        "spool": {"dir": str(tmp_path / "spool")}}, tmp_path)
    made = Link(cfg, {}, Spool(tmp_path / "spool"), asyncio.Event())
    if offset is not None:
        made.spread_offset = offset
    return made


def test_default_spread_is_written_and_bounded() -> None:
    parsed = config.parse(dict(BASE), Path("/tmp"))
    assert parsed.summary_spread == config.DEFAULT_SUMMARY_SPREAD == 30.0
    text = parsed.to_toml()
    assert tomllib.loads(text)["summary_spread"] == 30.0
    assert config.parse(tomllib.loads(text), Path("/tmp")) == parsed
    assert config.parse({**BASE, "summary_spread": 0}, Path("/tmp")).summary_spread == 0.0


@pytest.mark.parametrize("value", [-1, 50.5, 600, "10", True])
def test_a_spread_out_of_bounds_or_not_a_number_is_refused(value: Any) -> None:
    with pytest.raises(config.ConfigError, match="summary_spread"):
        config.parse({**BASE, "summary_spread": value}, Path("/tmp"))


def test_only_the_minute_that_just_closed_is_held_back(tmp_path: Path) -> None:
    agent = link(tmp_path, 30.0, offset=20.0)
    now = time.time()
    just_closed = int(now // 60 * 60) - 60  # the minute before this one...
    closed_for = now - (just_closed + 60)  # ...closed this many seconds ago (0-60)
    delay = agent._spread_delay([just_closed])
    if closed_for < 20.0:  # held until 20 s after it closed
        assert delay == pytest.approx(20.0 - closed_for, abs=0.5)
    else:  # already past this agent's point: at once
        assert delay == 0.0
    minute = int(now) - 65  # closed 5-6 s ago: held the remaining 14-15 s
    assert agent._spread_delay([minute]) == pytest.approx(20.0 - (now - minute - 60), abs=0.5)
    assert agent._spread_delay([int(now) - 90]) == 0.0  # closed 30 s ago: past the point
    assert agent._spread_delay([int(now) - 30]) == 0.0  # the partial minute of a stop
    assert agent._spread_delay([minute - 60, minute]) == 0.0  # a backlog goes at once
    assert link(tmp_path, 0.0)._spread_delay([minute]) == 0.0  # spreading turned off


def test_the_point_follows_the_server_id_and_lays_a_fleet_out_evenly() -> None:
    """Consecutive ids fill the window evenly (golden-ratio sequence), not by chance."""
    assert spread_offset(1, 30.0) == pytest.approx(30.0 * 0.6180339887)
    assert spread_offset(1, 30.0) == spread_offset(1, 30.0)  # the same after a restart
    assert spread_offset(5, 0.0) == 0.0
    for first, count in ((1, 10_000), (4321, 300)):
        per_second = collections.Counter(
            int(spread_offset(i, 30.0)) for i in range(first, first + count))
        assert len(per_second) == 30
        # random points would put 288 to 379 of 10,000 in some seconds
        assert max(per_second.values()) - min(per_second.values()) <= 0.01 * count + 2


async def test_the_agent_holds_a_just_closed_minute_until_its_point(
    peer: AgentPeer, agents: list[AgentProcess], tmp_path: Path
) -> None:
    """A real agent process: the summary of the minute that closed last is in its spool as
    it connects; it goes out at minute + 60 + spread_offset(server_id), not at once."""
    if time.time() % 60 > 40:  # too near the next minute, which would make a backlog of two
        await asyncio.sleep(60.5 - time.time() % 60)
    minute = int(time.time() // 60) * 60 - 60
    target = time.time() - (minute + 60) + 8.0  # eight seconds from now (a slow start-up)
    spread = 50.0
    server_id = min(range(1, 5000), key=lambda i: abs(spread_offset(i, spread) - target))
    due = minute + 60 + spread_offset(server_id, spread)
    Spool(tmp_path / "spool").put(
        {"minute": minute, "samples": 60, "values": {"cpu": [5.0, 1.0, 9.0]}})
    peer.server_id = server_id
    path = write_config(tmp_path, peer.url, peer.token, server_id=server_id,
                        summary_spread=spread)
    agents.append(AgentProcess(path, tmp_path / "agent.log"))
    await peer.wait_for("hello")
    assert time.time() < due - 1.0, "the agent took too long to connect for this test"
    arrived = await peer.wait_for("summary", timeout=30.0)
    at = time.time()
    assert arrived[0].frame.body["minute"] == minute
    assert due - 0.2 <= at <= due + 2.5, f"sent {at - due:+.2f} s from its point"
    # live samples flowed while it waited: the hold is not a stalled link
    assert len([r for r in peer.frames if r.frame.type == "sample"]) >= 2
    # and it went out in a sample's wake-up, right after that sample, not on a timer of
    # its own (samples are a second apart)
    index = next(i for i, r in enumerate(peer.frames) if r.frame.type == "summary")
    before = peer.frames[index - 1]
    assert before.frame.type == "sample"
    assert peer.frames[index].at - before.at < 0.3
