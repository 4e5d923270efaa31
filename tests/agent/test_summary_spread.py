"""``summary_spread``: each agent sends a just-closed minute's summary at its own point
in the next seconds, so a fleet's summaries do not all reach the server at once
(the server side of it is measured in tests/bench/test_fleet.py)."""

from __future__ import annotations

import asyncio
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from beeyard.agent import config
from beeyard.agent.link import Link
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


def test_each_agent_picks_its_own_point_within_the_spread(tmp_path: Path) -> None:
    offsets = [link(tmp_path, 30.0).spread_offset for _ in range(300)]
    assert all(0.0 <= o <= 30.0 for o in offsets)
    assert min(offsets) < 3.0 and max(offsets) > 27.0  # spread over the window, not bunched
    assert link(tmp_path, 0.0).spread_offset == 0.0


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
