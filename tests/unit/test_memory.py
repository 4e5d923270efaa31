"""The server's collector policy: young collections rarer, survivors frozen, and an
hourly full collection that also reaches frozen cycles."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator

import pytest

from beeyard.server.services import memory


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector can free it


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def test_survivors_are_frozen_and_the_hourly_pass_collects_frozen_cycles(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = memory.Collector()
    node = Node()
    gone = weakref.ref(node)
    await collector.tick(None)  # type: ignore[arg-type]
    assert gc.get_threshold() == memory.THRESHOLDS
    assert gc.get_freeze_count() > 0
    del node
    gc.collect()
    assert gone() is not None  # frozen: no collection walks it...
    monkeypatch.setattr(memory, "FULL_EVERY", 0.0)
    await collector.tick(None)  # type: ignore[arg-type]
    assert gone() is None  # ...until the hourly pass unfreezes and collects
    assert gc.get_freeze_count() > 0  # and freezes the survivors again
    await collector.stop(None)  # type: ignore[arg-type]


async def test_long_collections_are_logged_until_the_job_stops(
    restored: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A collection stops every agent link at once: one over LONG_PAUSE is logged (here
    every one, with the bound at 0), until the job stops at the server's exit."""
    monkeypatch.setattr(memory, "LONG_PAUSE", 0.0)
    collector = memory.Collector()
    try:
        with caplog.at_level(logging.WARNING, logger="beeyard.server.memory"):
            await collector.tick(None)  # type: ignore[arg-type]
            gc.collect()
            assert "garbage collection of generation 2 took" in caplog.text
            await collector.stop(None)  # type: ignore[arg-type]
            assert collector._timed not in gc.callbacks
            caplog.clear()
            gc.collect()
            assert caplog.text == ""
    finally:
        await collector.stop(None)  # type: ignore[arg-type]
