"""Reconnect delays: bounds, doubling to the 60 s cap, reset, and full-jitter spread."""

from __future__ import annotations

import random
import statistics

from beeyard.agent.backoff import Backoff


def test_ceiling_doubles_from_one_second_to_sixty() -> None:
    backoff = Backoff(rng=random.Random(1))
    ceilings = []
    for _ in range(10):
        ceilings.append(backoff.ceiling())
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceilings[-1]
    assert ceilings == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    for _ in range(1000):  # no overflow, still capped, after very many failures
        assert backoff.next_delay() <= 60.0
    backoff.reset()
    assert backoff.ceiling() == 1.0


def test_full_jitter_is_uniform_over_zero_to_ceiling() -> None:
    """At the cap, 20,000 delays spread evenly over [0, 60]: the mean is near 30,
    every tenth of the range gets about a tenth of them (a chi-square test)."""
    rng = random.Random(20240501)
    delays = []
    for _ in range(20_000):
        backoff = Backoff(rng=rng)
        backoff.attempt = 10
        delays.append(backoff.next_delay())
    assert min(delays) >= 0.0 and max(delays) <= 60.0
    assert abs(statistics.fmean(delays) - 30.0) < 0.6
    counts = [0] * 10
    for d in delays:
        counts[min(9, int(d / 6.0))] += 1
    expected = len(delays) / 10
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    assert chi2 < 27.88  # p = 0.001 for 9 degrees of freedom
    # and spread: a synchronised fleet would all pick (nearly) the same delay
    assert statistics.pstdev(delays) > 15.0
