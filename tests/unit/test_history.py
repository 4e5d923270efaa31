"""The arithmetic of metric history: tier choice, bucket plans, times, traffic cycles."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from beeyard.server.services import history

D = dt.date
NOW = 1_800_000_000.0


@pytest.mark.parametrize(("age", "tier"), [
    (60, "live"), (900, "live"), (901, "minute"), (29 * 86400, "minute"),
    (31 * 86400, "hour"), (399 * 86400, "hour"), (401 * 86400, "day"),
])
def test_choose_tier(age: float, tier: str) -> None:
    assert history.choose_tier(NOW - age, NOW, minute_days=30, hour_days=400) == tier


@pytest.mark.parametrize("points", [1, 2, 3, 10, 99, 300, 1000, 5000])
@pytest.mark.parametrize("span", [30, 600, 3600, 86400, 40 * 86400, 3 * 365 * 86400])
def test_plan_never_exceeds_points(points: int, span: int) -> None:
    start = NOW - span - 17.3
    p = history.plan(start, NOW, points, NOW, minute_days=30, hour_days=400)
    base = history.TIER_STEP[p.tier]
    assert p.step % base == 0
    assert p.start <= start < p.start + p.step and p.start % p.step == 0
    buckets = int(NOW // p.step) - int(start // p.step) + 1
    assert buckets <= points


def test_parse_time() -> None:
    assert history.parse_time("1700000000", "from") == 1_700_000_000
    assert history.parse_time("2026-11-22T08:00:00Z", "from") == history.parse_time(
        "2026-11-22T09:00:00+01:00", "from")
    assert history.parse_time("2026-11-22T08:00:00", "from") == dt.datetime(
        2026, 11, 22, 8, tzinfo=dt.UTC).timestamp()
    for bad in ("soon", "nan", "inf", "-5", "1e20"):
        with pytest.raises(ValueError, match="from"):
            history.parse_time(bad, "from")


@pytest.mark.parametrize(("today", "reset", "start"), [
    (D(2026, 11, 22), 1, D(2026, 11, 1)),
    (D(2026, 11, 22), 15, D(2026, 11, 15)),
    (D(2026, 11, 14), 15, D(2026, 10, 15)),
    (D(2026, 1, 10), 15, D(2025, 12, 15)),
    (D(2026, 3, 1), 31, D(2026, 2, 28)),   # no 31 February: its last day
    (D(2026, 2, 28), 31, D(2026, 2, 28)),
    (D(2026, 2, 27), 31, D(2026, 1, 31)),
    (D(2024, 2, 29), 30, D(2024, 2, 29)),  # leap year
    (D(2026, 5, 30), 31, D(2026, 4, 30)),
])
def test_cycle_start(today: dt.date, reset: int, start: dt.date) -> None:
    assert history.cycle_start(today, reset) == start


def test_cycles_are_contiguous() -> None:
    for reset in (1, 15, 28, 29, 30, 31):
        cycles = history.cycles(D(2026, 3, 30), reset, 14)
        assert len(cycles) == 14
        assert cycles[0][0] <= D(2026, 3, 30) < cycles[0][1]
        for (start, _), (_, previous_end) in itertools.pairwise(cycles):
            assert previous_end == start
        assert all(28 <= (end - start).days <= 31 for start, end in cycles)
