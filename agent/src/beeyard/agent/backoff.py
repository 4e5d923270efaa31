"""Reconnect delays: exponential backoff with full jitter, 1 s doubling up to 60 s.

Full jitter (a delay drawn uniformly from zero to the current ceiling) is what
spreads a fleet out after the server restarts: 10,000 agents that lost their
link at the same instant would otherwise come back in synchronised waves.
The ceiling resets only after a link that stayed up (``reset``), so a server
that accepts and drops connections at once still sees agents slow down.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(
        self, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None
    ) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret

    def ceiling(self) -> float:
        """The upper bound of the next delay: base·2^attempt, at most cap."""
        return min(self.cap, self.base * 2.0 ** min(self.attempt, 32))

    def next_delay(self) -> float:
        """A delay uniform in [0, ceiling]; each call raises the next ceiling."""
        delay = self._rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
