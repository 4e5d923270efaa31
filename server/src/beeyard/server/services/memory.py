"""Garbage collection tuned for a server holding a large, long-lived live state.

CPython's cyclic collector walks every tracked object of the oldest generation
on a full collection. With thousands of agents that is millions of objects
(each link's protocol, transport and task; each server's latest sample), and a
full collection stops the event loop for 100-300 ms: at 1,000 agents it was the
whole latency tail of the live stream (p99 163 ms with the collector as it is,
16.6 ms without it; docs/benchmarks.md).

So the server collects the youngest generation only every ``YOUNG`` new
containers instead of every 700 (a live sample's ~30 dicts and lists then die
by reference counting before they are ever promoted, rather than piling up in
the oldest generation), and moves what has survived into the permanent
generation once a minute (``gc.freeze``), which the collector never walks.
Frozen objects are still freed by reference counting; only frozen *cycles*
that become garbage would stay, so once an hour everything is unfrozen,
collected in full (one pause an hour) and frozen again.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from beeyard.server.services import Background

FREEZE_EVERY = 60.0
FULL_EVERY = 3600.0
YOUNG = 50_000  # allocations between collections of the youngest generation (default 700)
THRESHOLDS = (YOUNG, 20, 100)
LONG_PAUSE = 0.1  # seconds: a collection this long stalls every agent link; logged

log = logging.getLogger("beeyard.server.memory")


GcCallback = Callable[[str, dict[str, Any]], None]


def collection_timer(on_long: Callable[[int, float, int], None],
                     longer_than: float) -> GcCallback:
    """A ``gc.callbacks`` entry that calls ``on_long(generation, seconds, collected)`` for
    every collection of at least ``longer_than`` seconds: a collection stops the event
    loop, so it should show by name, not only as a latency spike (the fleet benchmark
    uses it for its own processes too)."""
    started = 0.0

    def timed(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
            return
        took = time.perf_counter() - started
        if took >= longer_than:
            on_long(info["generation"], took, info["collected"])

    return timed


def _log_pause(generation: int, seconds: float, collected: int) -> None:
    log.warning("garbage collection of generation %d took %.0f ms (%d collected)",
                generation, seconds * 1e3, collected)


class Collector:
    def __init__(self) -> None:
        self._full = time.monotonic()
        self._tuned = False
        self._timed = collection_timer(_log_pause, LONG_PAUSE)

    async def tick(self, _app: web.Application) -> None:
        if not self._tuned:
            gc.set_threshold(*THRESHOLDS)
            gc.callbacks.append(self._timed)
            self._tuned = True
        now = time.monotonic()
        if now - self._full >= FULL_EVERY:
            self._full = now
            gc.unfreeze()
            gc.collect()
        gc.freeze()

    async def stop(self, _app: web.Application) -> None:
        """Stop timing collections: those of the interpreter's own exit are not news."""
        if self._timed in gc.callbacks:
            gc.callbacks.remove(self._timed)


def job() -> Background:
    """The periodic freeze; for the server process only (``beeyard-server serve``)."""
    collector = Collector()
    return Background("gc", FREEZE_EVERY, collector.tick, final=collector.stop)
