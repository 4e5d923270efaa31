"""The in-memory live state: bounded ring, online state, and a fan-out that never blocks."""

from __future__ import annotations

import asyncio

from beeyard.server.hub import live
from beeyard.server.hub.live import LiveState


def test_latest_ring_and_online() -> None:
    state = LiveState()
    assert state.latest(1) is None and state.ring(1) == [] and not state.online(1)
    state.mark_online(1, interval=60.0)
    for ts in range(40):
        state.record_sample(1, float(ts), {"cpu": ts})
    assert state.online(1) and state.last_seen(1) is not None
    assert state.latest(1) == (39.0, {"cpu": 39})
    ring = state.ring(1)
    assert len(ring) == live._ring_length(60.0) == 16  # 15 minutes at one a minute, + 1
    assert [ts for ts, _ in state.ring(1, since=37.0)] == [38.0, 39.0]
    state.record_sample(1, 10.0, {"cpu": 0})  # out of order: ignored
    assert state.latest(1) == (39.0, {"cpu": 39})
    state.mark_offline(1)
    assert not state.online(1) and state.latest(1) is not None
    assert state.latest(1) == (39.0, {"cpu": 39}) and state.interval(1) == 60.0


async def test_subscribers_get_events_and_slow_ones_drop_oldest() -> None:
    state = LiveState()
    fast = state.subscribe()
    slow = state.subscribe(maxsize=3)
    state.mark_online(7)
    for ts in range(5):
        state.record_sample(7, float(ts), {})
    state.mark_offline(7)
    assert (await anext(fast))["type"] == "online"
    rest = fast.drain()
    assert [e["type"] for e in rest] == ["sample"] * 5 + ["offline"]
    assert slow.dropped == 4
    assert [e.get("ts") for e in slow.drain()] == [3.0, 4.0, None]
    slow.close()
    assert state.subscriber_count == 1
    with fast:
        waiter = asyncio.create_task(anext(fast))
        await asyncio.sleep(0)
        state.remove(7)
        assert (await waiter) == {"type": "server_removed", "server_id": 7}
    assert state.subscriber_count == 0
    assert [e async for e in fast] == []


def test_the_fleet_gets_summary_values_and_watchers_full_metrics() -> None:
    state = LiveState()
    with state.subscribe() as fleet, state.subscribe(server_id=1) as one, \
            state.subscribe(server_id=2) as other:
        state.record_sample(1, 5.0, {"cpu": 40.0, "memory": {"used": 2.0, "percent": 50.0}})
        (brief,) = fleet.drain()
        assert brief == {"type": "sample", "server_id": 1, "ts": 5.0,
                         "values": {"cpu": 40.0, "memory_used": 2.0, "memory_percent": 50.0}}
        (full,) = one.drain()
        assert full == {**brief, "metrics": {"cpu": 40.0,
                                             "memory": {"used": 2.0, "percent": 50.0}}}
        assert other.drain() == []
        state.server_updated(1, {"name": "x"})
        assert fleet.drain() == one.drain() == [
            {"type": "server_updated", "server_id": 1, "fields": {"name": "x"}}]
    assert state.subscriber_count == 0
