"""The server's collector policy: young collections rarer, survivors frozen, and an
hourly full collection that also reaches frozen cycles."""

from __future__ import annotations

import gc
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
