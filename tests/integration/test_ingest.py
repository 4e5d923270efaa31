"""Durable ingest: minute summaries are committed, then acked; replays are harmless;
nothing is acked while the database cannot take the rows, and all of it is once it can."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import Api
from tests.integration.agentlink import FakeAgent, summary
from tests.integration.test_enrollment import enroll

from beeyard.server.hub.wiring import INGEST
from beeyard.server.services import ingest

MINUTE = int(time.time()) // 60 * 60 - 600


async def acked(agent: FakeAgent, want: set[int], timeout: float = 10.0) -> set[int]:
    """Collect acks until every minute in ``want`` was acknowledged."""
    got: set[int] = set()
    deadline = time.monotonic() + timeout
    while not want <= got:
        frame = await agent.recv(timeout=max(0.01, deadline - time.monotonic()),
                                 skip=("ping", "pong"))
        assert frame.type == "ack", frame
        got |= set(frame.body["minutes"])
    return got


async def no_ack(agent: FakeAgent, seconds: float) -> None:
    with pytest.raises(TimeoutError):
        await agent.recv(timeout=seconds, skip=("ping", "pong"))


@contextlib.asynccontextmanager
async def minutes_locked(db: asyncpg.Connection) -> AsyncIterator[None]:
    """metrics_minute locked as a stuck database holds it: no insert gets through until
    the block ends."""
    lock = db.transaction()
    await lock.start()
    await db.execute("LOCK TABLE metrics_minute IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        await lock.rollback()


async def test_summaries_are_committed_then_acked_and_replays_are_idempotent(
    api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await api.login()
    server_id, token = await enroll(api)
    agent, _ = await FakeAgent.start(client, token)
    minutes = [MINUTE + 60 * i for i in range(3)]
    for i, m in enumerate(minutes):
        await agent.send("summary", summary(m, cpu=10.0 + i))
    assert await acked(agent, set(minutes)) == set(minutes)
    rows = await db.fetch(
        "SELECT extract(epoch FROM minute)::bigint AS m, samples, cpu_avg, cpu_min, cpu_max, "
        "load1_max, gpu_utilization_avg, net_rx_bytes, net_tx_bytes FROM metrics_minute "
        "WHERE server_id = $1 ORDER BY minute", server_id)
    assert [r["m"] for r in rows] == minutes
    first = dict(rows[0])
    assert first == {"m": MINUTE, "samples": 60, "cpu_avg": 10.0, "cpu_min": 5.0,
                     "cpu_max": 15.0, "load1_max": pytest.approx(0.9),
                     "gpu_utilization_avg": None, "net_rx_bytes": 1000, "net_tx_bytes": 2000}

    # A replay after an outage (the agent never saw the ack): acked again, stored once.
    await agent.send("summary", summary(minutes[0], cpu=99.0))
    await agent.send("summary", summary(minutes[0], cpu=99.0))
    assert await acked(agent, {minutes[0]}) == {minutes[0]}
    assert await db.fetchval("SELECT count(*) FROM metrics_minute WHERE server_id = $1",
                             server_id) == 3
    assert await db.fetchval("SELECT cpu_avg FROM metrics_minute WHERE server_id = $1 AND "
                             "minute = to_timestamp($2)", server_id, minutes[0]) == 10.0


async def test_a_day_without_a_partition_gets_one(
    api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await api.login()
    _server_id, token = await enroll(api)
    agent, _ = await FakeAgent.start(client, token)
    old = MINUTE - 5 * 86400
    await agent.send("summary", summary(old))
    assert await acked(agent, {old}) == {old}
    day = time.strftime("%Y%m%d", time.gmtime(old))
    assert await db.fetchval("SELECT to_regclass($1) IS NOT NULL", f"metrics_minute_{day}")


async def test_no_ack_while_the_table_is_locked_then_all_acked(
    api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await api.login()
    server_id, token = await enroll(api)
    agent, _ = await FakeAgent.start(client, token)
    async with minutes_locked(db):
        await agent.send("summary", summary(MINUTE))
        await agent.send("summary", summary(MINUTE + 60))
        await no_ack(agent, 1.5)
    assert await acked(agent, {MINUTE, MINUTE + 60}) == {MINUTE, MINUTE + 60}
    assert await db.fetchval("SELECT count(*) FROM metrics_minute WHERE server_id = $1",
                             server_id) == 2


async def test_no_ack_while_inserts_fail_then_acked_after_recovery(
    api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    """A failing database (the table gone) is retried, never acked, never dropped."""
    await api.login()
    server_id, token = await enroll(api)
    agent, _ = await FakeAgent.start(client, token)
    writer = client.server.app[INGEST]
    await db.execute("ALTER TABLE metrics_minute RENAME TO metrics_minute_away")
    try:
        await agent.send("summary", summary(MINUTE))
        while writer.failures < 2:
            await agent.send("ping", {"ts": 1.0})  # keep the link alive meanwhile
            await asyncio.sleep(0.2)
        await no_ack(agent, 0.5)
        assert writer.last_error is not None and "metrics_minute" in writer.last_error
    finally:
        await db.execute("ALTER TABLE metrics_minute_away RENAME TO metrics_minute")
    assert await acked(agent, {MINUTE}) == {MINUTE}
    assert await db.fetchval("SELECT count(*) FROM metrics_minute WHERE server_id = $1",
                             server_id) == 1
    assert writer.last_error is None


async def test_acks_follow_the_agent_to_its_new_link(
    api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    """Summaries sent on a link that is gone by the commit are acked on the next link."""
    await api.login()
    _, token = await enroll(api)
    first, _ = await FakeAgent.start(client, token)
    async with minutes_locked(db):
        await first.send("summary", summary(MINUTE))
        await asyncio.sleep(0.3)
        second, _ = await FakeAgent.start(client, token)
    assert await acked(second, {MINUTE}) == {MINUTE}


@pytest.fixture
def small_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "QUEUE", 2)


async def test_a_full_queue_stops_reading_the_link_until_the_writer_catches_up(
    small_queue: None, api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    """Backpressure: beyond the queue, the hub stops reading summaries (they stay in the
    agent's spool); nothing is dropped and everything is acked once the writer is back."""
    await api.login()
    server_id, token = await enroll(api)
    agent, _ = await FakeAgent.start(client, token)
    assert client.server.app[INGEST].queue.maxsize == 2
    minutes = {MINUTE + 60 * i for i in range(5)}
    async with minutes_locked(db):
        for m in sorted(minutes):
            await agent.send("summary", summary(m))
        await agent.send("ping", {"ts": 5.0})
        with pytest.raises(TimeoutError):  # the link is not being read: no pong
            await agent.recv(timeout=1.0)
    got: set[int] = set()
    pong = False
    while not (minutes <= got and pong):
        frame = await agent.recv(timeout=10.0)
        if frame.type == "ack":
            got |= set(frame.body["minutes"])
        pong = pong or frame.type == "pong"
    assert await db.fetchval("SELECT count(*) FROM metrics_minute WHERE server_id = $1",
                             server_id) == 5


async def test_summaries_trickling_in_are_written_together(
    api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    """Agents spread their summaries over the minute: the writer gathers a second's worth
    into one transaction instead of one transaction per agent, and acks each agent."""
    await api.login()
    writer = client.server.app[INGEST]
    links = []
    for _ in range(5):
        _, token = await enroll(api)
        links.append((await FakeAgent.start(client, token))[0])
    before = writer.batches
    started = time.monotonic()
    for agent in links:  # one every 100 ms, as spread agents would send them
        await agent.send("summary", summary(MINUTE))
        await asyncio.sleep(0.1)
    for agent in links:
        assert await acked(agent, {MINUTE}) == {MINUTE}
    assert writer.batches - before == 1, writer.describe()
    assert time.monotonic() - started >= ingest.LINGER  # held back by the linger, once
    assert await db.fetchval("SELECT count(*) FROM metrics_minute WHERE minute = "
                             "to_timestamp($1)", MINUTE) == 5


async def test_a_summary_waiting_for_room_is_dropped_with_its_link(
    small_queue: None, api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    """An agent that goes away while its summary waits for room in the queue leaves no
    waiting task behind (it resends the unacked summary from its spool when it is back):
    otherwise every reconnect during a database outage would strand one more."""
    from beeyard.server.hub.agents import HUB
    await api.login()
    server_id, token = await enroll(api)
    agent, _ = await FakeAgent.start(client, token)
    async with minutes_locked(db):
        link = client.server.app[HUB].links[server_id]
        writer = client.server.app[INGEST]
        for i in range(8):  # the writer holds 3 (stuck on the lock), 2 fill the queue
            await agent.send("summary", summary(MINUTE + 60 * i))
        deadline = time.monotonic() + 10
        while not (len(writer._held) == 3 and writer.queue.full()  # past its linger
                   and link.blocked is not None):
            assert time.monotonic() < deadline, "the hub never ran out of room"
            await asyncio.sleep(0.02)
        waiting = link.blocked
        assert waiting is not None
        await agent.ws.close()
        deadline = time.monotonic() + 10
        while not waiting.done():
            assert time.monotonic() < deadline, "the waiting summary outlived its link"
            await asyncio.sleep(0.02)
        assert waiting.cancelled()
