"""Per-second rates from monotonically increasing counters.

Kernel counters only grow, except when they wrap, a device is re-created or
the host resumes from a snapshot: a counter that went backwards yields 0 for
that interval rather than a huge or negative rate.
"""

from __future__ import annotations


def rate(previous: float | None, current: float, seconds: float) -> float:
    """Per-second increase from ``previous`` to ``current`` over ``seconds``."""
    if previous is None or seconds <= 0 or current < previous:
        return 0.0
    return (current - previous) / seconds


class Counters:
    """The previous reading of a set of named counter tuples and the time it was taken."""

    def __init__(self) -> None:
        self._previous: dict[str, tuple[float, ...]] = {}
        self._at: float | None = None

    def update(self, now: float, current: dict[str, tuple[float, ...]]) -> dict[str, list[float]]:
        """Rates per name (each counter of the tuple), then remember ``current``.
        A name seen for the first time has zero rates.

        ``rate`` is inlined: a function call per counter is most of the cost
        of this loop, and the agent runs it cold once a second."""
        seconds = 0.0 if self._at is None else now - self._at
        previous = self._previous
        out: dict[str, list[float]] = {}
        for name, values in current.items():
            before = previous.get(name)
            if before is None or len(before) != len(values) or seconds <= 0:
                out[name] = [0.0] * len(values)
            else:
                out[name] = [(v - b) / seconds if v >= b else 0.0
                             for b, v in zip(before, values, strict=True)]
        self._previous = current
        self._at = now
        return out
