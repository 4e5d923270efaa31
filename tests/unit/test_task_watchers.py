"""A run's event-stream watchers: a reader that falls far behind is told to resync
instead of holding the run's output in its queue once more."""

from __future__ import annotations

from beeyard.server.services.tasks import WATCH_LIMIT, LiveRun


async def test_a_reader_too_far_behind_is_told_to_resync_and_dropped() -> None:
    run = LiveRun(7, 3, [])
    with run.watch() as slow, run.watch() as fast:
        for i in range(WATCH_LIMIT):
            run.publish("output", {"server_id": 1, "text": f"line {i}\n"})
            assert fast.get_nowait()[1]["text"] == f"line {i}\n"
        assert slow.qsize() == WATCH_LIMIT
        run.publish("output", {"server_id": 1, "text": "one too many\n"})
        assert slow.qsize() == 1 and slow.get_nowait() == ("resync", {"run_id": 7})
        assert slow not in run.watchers and fast in run.watchers
        assert fast.get_nowait()[1]["text"] == "one too many\n"
        run.publish("output", {"server_id": 1, "text": "later\n"})
        assert slow.empty()  # it gets nothing more: its client reconnects to a snapshot
