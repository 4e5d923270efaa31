"""The agent link against a real server and database, with real WebSocket clients:
hello/welcome, refusals, live state, token rotation, replacement, bad frames and
dead links."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import aiohttp
import asyncpg
import msgpack
import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import Api
from tests.integration.agentlink import METRICS, FakeAgent
from tests.integration.test_enrollment import enroll

from beeyard.server import context
from beeyard.server.config import Settings
from beeyard.server.hub import agents
from beeyard.server.hub.agents import HUB


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, agent_heartbeat=1.0)


async def test_hello_welcome_and_live_samples(
    api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await api.login()
    server_id, token = await enroll(api, name="db-1")
    live = client.server.app[context.LIVE]
    with live.subscribe() as events:
        agent, welcome = await FakeAgent.start(client, token)
        assert welcome.type == "welcome"
        assert welcome.body == {"server_id": server_id, "protocol": "1.0", "heartbeat": 1.0}
        assert live.online(server_id)
        now = time.time()
        for i in range(3):
            await agent.send("sample", {"ts": now + i, "metrics": METRICS})
        await agent.send("ping", {"ts": 42.0})
        assert (await agent.recv()).body == {"ts": 42.0}  # pong after the samples
        assert [ts for ts, _ in live.ring(server_id)] == [now, now + 1, now + 2]
        latest = live.latest(server_id)
        assert latest is not None and latest[1]["cpu"] == 12.5
        types = [e["type"] for e in events.drain()]
        assert types == ["online", "server_updated", "sample", "sample", "sample"]
    row = await db.fetchrow("SELECT * FROM servers WHERE id = $1", server_id)
    assert row["agent_version"] == "0.1.0" and row["capabilities"] == ["docker_read"]
    assert row["protocol"] == "1.0" and row["connected_at"] is not None
    await agent.send("bye", {"code": "shutdown", "reason": "stopping", "retry": True})
    await agent.closed()
    await _until(lambda: not live.online(server_id))


async def test_server_pings_every_heartbeat(api: Api, client: TestClient[Any, Any]) -> None:
    await api.login()
    _, token = await enroll(api)
    agent, _ = await FakeAgent.start(client, token)
    started = time.monotonic()
    pings = [await agent.recv(skip=()) for _ in range(2)]
    assert [p.type for p in pings] == ["ping", "ping"]
    assert time.monotonic() - started < 4


async def test_a_link_whose_samples_flow_is_pinged_as_a_sample_arrives(
    api: Api, client: TestClient[Any, Any]
) -> None:
    """Samples every 1 s, heartbeat 2 s: the ping goes out on the first sample after
    the heartbeat, in the agent's own wake-up, and the sweep does not ping such a link
    at another moment (it would wake an idle agent once more) until 3 s passed."""
    assert agents.ping_due(2.0, 1.0) == 3.0 and agents.ping_due(2.0, 5.0) == 2.0
    await api.login()
    _, token = await enroll(api)
    client.server.app[HUB].heartbeat = 2.0
    agent, welcome = await FakeAgent.start(client, token, interval=1.0)
    assert welcome.body["heartbeat"] == 2.0
    for _ in range(3):
        with pytest.raises(TimeoutError):  # a heartbeat passes without a sample: no ping
            await agent.recv(timeout=2.4, skip=())
        sent = time.monotonic()
        await agent.send("sample", {"ts": time.time(), "metrics": METRICS})
        ping = await agent.recv(timeout=0.25, skip=())
        assert ping.type == "ping"
        assert time.monotonic() - sent < 0.25


async def test_incompatible_protocol_is_refused_for_good(
    api: Api, client: TestClient[Any, Any]
) -> None:
    await api.login()
    _, token = await enroll(api)
    _agent, bye = await FakeAgent.start(client, token, protocol="2.0")
    assert bye.type == "bye" and bye.body["code"] == "incompatible"
    assert bye.body["retry"] is False and "2.0" in bye.body["reason"]


async def test_first_frame_must_be_hello_in_time(
    api: Api, client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.login()
    _, token = await enroll(api)
    agent = await FakeAgent.connect(client, token)
    await agent.send("ping", {"ts": 1.0})
    (bye,) = await agent.closed()
    assert bye.body["code"] == "invalid_frame" and "hello" in bye.body["reason"]
    monkeypatch.setattr(agents, "HELLO_TIMEOUT", 0.3)
    agent = await FakeAgent.connect(client, token)
    (bye,) = await agent.closed()
    assert bye.body["code"] == "invalid_frame" and "no hello" in bye.body["reason"]


async def test_unknown_token_is_refused_before_the_upgrade(client: TestClient[Any, Any]) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await FakeAgent.connect(client, "bag_" + "x" * 43)
    assert caught.value.status == 401
    async with client.get("/api/agent/ws", headers={"Authorization": "Bearer bag_x"}) as resp:
        assert resp.status == 401
        assert (await resp.json())["code"] == "unknown_token"


async def test_a_second_connection_replaces_the_first(
    api: Api, client: TestClient[Any, Any]
) -> None:
    await api.login()
    server_id, token = await enroll(api)
    first, _ = await FakeAgent.start(client, token)
    second, welcome = await FakeAgent.start(client, token)
    assert welcome.type == "welcome"
    frames = await first.closed()
    assert frames[-1].type == "bye" and frames[-1].body["code"] == "replaced"
    live = client.server.app[context.LIVE]
    assert live.online(server_id)
    await second.send("ping", {"ts": 1.0})
    assert (await second.recv()).type == "pong"
    assert not client.server.app[HUB].links[server_id].sock.closed


async def test_garbage_frames_are_survived_then_the_link_is_closed(
    api: Api, client: TestClient[Any, Any]
) -> None:
    await api.login()
    server_id, token = await enroll(api)
    agent, _ = await FakeAgent.start(client, token)
    hub = client.server.app[HUB]
    for junk in (b"\xc1", b"\x92\x01\x02", b"not msgpack at all"):
        await agent.ws.send_bytes(junk)
    await agent.ws.send_str("text is not a frame")
    await agent.send("welcome", {"server_id": 1, "protocol": "1.0", "heartbeat": 5.0})
    await agent.send("ping", {"ts": 7.0})
    assert (await agent.recv()).body == {"ts": 7.0}
    assert hub.links[server_id].bad_frames == 5
    for _ in range(agents.MAX_BAD_FRAMES - 5):
        await agent.ws.send_bytes(b"\xc1")
    frames = await agent.closed()
    assert frames[-1].type == "bye" and frames[-1].body["code"] == "invalid_frame"
    await _until(lambda: not client.server.app[context.LIVE].online(server_id))


async def test_a_silent_link_is_dead_within_three_heartbeats(
    api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await api.login()
    server_id, token = await enroll(api)
    live = client.server.app[context.LIVE]
    agent, _ = await FakeAgent.start(client, token)
    assert agents.silence_limit(1.0, 1.0) == 3.0
    assert agents.silence_limit(5.0, 1.0) == 9.0  # the defaults: under 10 s
    assert agents.silence_limit(5.0, 60.0) == 15.0
    started = time.monotonic()
    with live.subscribe() as events:
        agent.answer_pings = False
        with pytest.raises(ConnectionError):
            await agent.recv(timeout=10, skip=("ping", "bye"))
        offline = next(e for e in events.drain() if e["type"] == "offline")
    assert offline["server_id"] == server_id
    assert 2.5 < time.monotonic() - started < 6
    assert not live.online(server_id)
    await _until_db(db, server_id)


async def test_rotation_reaches_a_connected_agent(
    api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await api.login()
    server_id, token = await enroll(api)
    agent, _ = await FakeAgent.start(client, token)

    async def store() -> str:
        frame = await agent.recv()
        assert frame.type == "rotate_token" and frame.id is not None
        await agent.send("token_stored", {}, id=frame.id)
        return str(frame.body["token"])

    stored = asyncio.create_task(store())
    status, out = await api.post(f"/api/agent/{server_id}/rotate-token")
    assert status == 200 and out["data"] == {"server_id": server_id, "delivered": True}, out
    new_token = await stored
    assert new_token.startswith("bag_") and new_token != token
    frames = await agent.closed()
    assert frames[-1].body["code"] == "revoked" and frames[-1].body["retry"] is True
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await FakeAgent.connect(client, token)
    assert caught.value.status == 401
    _again, welcome = await FakeAgent.start(client, new_token)
    assert welcome.type == "welcome"
    detail = await db.fetchval(
        "SELECT detail FROM audit_logs WHERE action = 'agent.rotate_token'")
    assert detail == {"connected": True, "delivered": True}


async def test_rotation_unconfirmed_revokes(
    api: Api, client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from beeyard.server.api import enrollments
    monkeypatch.setattr(enrollments, "ROTATE_WAIT", 0.5)
    await api.login()
    server_id, token = await enroll(api)
    agent, _ = await FakeAgent.start(client, token)
    status, out = await api.post(f"/api/agent/{server_id}/rotate-token")
    assert status == 200 and out["data"]["delivered"] is False
    frames = await agent.closed()
    assert frames[0].type == "rotate_token"
    assert frames[-1].body == {"code": "revoked", "retry": False,
                               "reason": "the run token was revoked; enroll the agent again"}


async def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _until_db(db: asyncpg.Connection, server_id: int) -> None:
    for _ in range(100):
        if await db.fetchval("SELECT last_seen_at FROM servers WHERE id = $1", server_id):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("last_seen_at not written")


async def test_deleting_a_server_closes_its_link_for_good(
    api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await api.login()
    server_id, token = await enroll(api)
    agent, _ = await FakeAgent.start(client, token)
    await db.execute("DELETE FROM servers WHERE id = $1", server_id)
    client.server.app[context.LIVE].remove(server_id)  # what DELETE /api/servers/{id} does
    frames = await agent.closed()
    assert frames[-1].body["code"] == "revoked" and frames[-1].body["retry"] is False
    live = client.server.app[context.LIVE]
    assert live.latest(server_id) is None and live.last_seen(server_id) is None


async def test_a_database_failure_at_hello_asks_the_agent_to_retry(
    api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await api.login()
    _, token = await enroll(api)
    await db.execute("""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'refused for the test'; END $$;
        CREATE TRIGGER refuse BEFORE UPDATE ON servers FOR EACH ROW EXECUTE FUNCTION refuse();
    """)
    _agent, bye = await FakeAgent.start(client, token)
    assert bye.type == "bye" and bye.body["code"] == "shutdown" and bye.body["retry"] is True
    await db.execute("DROP TRIGGER refuse ON servers")
    _agent, welcome = await FakeAgent.start(client, token)
    assert welcome.type == "welcome"


async def test_presence_closes_links_whose_token_changed_elsewhere(
    api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    """A rotation or deletion made by another replica (here: straight in the database)
    ends this replica's link at the next presence sweep, and last_seen is written."""
    from beeyard.server.services import presence
    await api.login()
    server_id, token = await enroll(api)
    other_id, other_token = await enroll(api)
    agent, _ = await FakeAgent.start(client, token)
    other, _ = await FakeAgent.start(client, other_token)
    await db.execute("UPDATE servers SET token_digest = 'x'::bytea, last_seen_at = NULL "
                     "WHERE id = $1", server_id)
    sweep = presence.Presence()
    for _ in range(presence.SLICES * presence.TOUCH_SHARES):  # every share of servers once
        await sweep.tick(client.server.app)
    frames = await agent.closed()
    assert frames[-1].body["code"] == "revoked" and frames[-1].body["retry"] is False
    await other.send("ping", {"ts": 3.0})
    assert (await other.recv()).type == "pong"
    assert await db.fetchval("SELECT last_seen_at IS NOT NULL FROM servers WHERE id = $1",
                             other_id)


async def test_presence_writes_last_seen_a_share_of_the_servers_at_a_time(
    api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    """Each round (1 s) writes one share of the online servers' last_seen_at, each share in
    turn: one statement for every server at once was a burst of 70-120 ms of PostgreSQL
    time at 10,000 agents. After a whole cycle every online server has been written."""
    from beeyard.server.services import presence
    await api.login()
    links = []
    for _ in range(3):
        server_id, token = await enroll(api)
        links.append((server_id, (await FakeAgent.start(client, token))[0]))
    ids = [server_id for server_id, _ in links]
    await db.execute("UPDATE servers SET last_seen_at = NULL WHERE id = ANY($1)", ids)
    sweep = presence.Presence()
    for share in range(presence.TOUCH_SHARES):
        for _ in range(presence.SLICES):  # one round
            await sweep.tick(client.server.app)
        seen = {r["id"] for r in await db.fetch(
            "SELECT id FROM servers WHERE id = ANY($1) AND last_seen_at IS NOT NULL", ids)}
        assert seen == {i for i in ids if i % presence.TOUCH_SHARES <= share}, share
    assert seen == set(ids)


async def test_a_changed_capability_set_is_stored_and_announced(
    api: Api, client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await api.login()
    server_id, token = await enroll(api)
    live = client.server.app[context.LIVE]
    agent, _ = await FakeAgent.start(client, token)
    with live.subscribe(server_id=server_id) as events:
        await agent.send("capabilities", {"capabilities": ["terminal", "docker_read"]})
        wanted = {"capabilities": ["terminal", "docker_read"]}
        await _until(lambda: any(e["type"] == "server_updated" and e.get("fields") == wanted
                                 for e in events.drain()))
    row = await db.fetchrow("SELECT capabilities FROM servers WHERE id = $1", server_id)
    assert row["capabilities"] == ["terminal", "docker_read"]
    status, body = await api.get(f"/api/servers/{server_id}")
    assert status == 200 and body["data"]["capabilities"] == ["terminal", "docker_read"]
    bogus = msgpack.packb({"t": "capabilities", "b": {"capabilities": ["root_shell"]}})
    await agent.ws.send_bytes(bogus)  # refused as a bad frame; the link survives
    await agent.send("ping", {"ts": 7.0})
    assert (await agent.recv()).body == {"ts": 7.0}
    assert (await db.fetchval("SELECT capabilities FROM servers WHERE id = $1", server_id)
            == ["terminal", "docker_read"])


async def test_presence_visits_every_link_once_a_round_while_others_come_and_go(
    api: Api, client: TestClient[Any, Any]
) -> None:
    """Links are taken a tenth per tick; links leaving in the middle of a round must not
    shift the others out of their tenth (they would go unpinged for rounds)."""
    from beeyard.server.services import presence
    await api.login()
    fakes = []
    for _ in range(24):
        _, token = await enroll(api)
        fakes.append((await FakeAgent.start(client, token))[0])
    hub = client.server.app[HUB]
    job = client.server.app[context.TASKS]["presence"]
    assert job.task is not None
    job.task.cancel()  # only this test's rounds ping from here on
    sweep = presence.Presence()
    for link in hub.links.values():
        link.last_ping = 0.0  # every heartbeat due
    await sweep.tick(client.server.app)
    await sweep.tick(client.server.app)
    leaving = sorted(hub.links)[:6]  # the first in the round's order go
    for server_id in leaving:
        await hub.disconnect(server_id, "shutdown", "churn", retry=True)
    await _until(lambda: not set(leaving) & set(hub.links))
    for _ in range(presence.SLICES - 2):
        await sweep.tick(client.server.app)
    unvisited = [sid for sid, link in hub.links.items() if link.last_ping == 0.0]
    assert not unvisited, f"{len(unvisited)} of {len(hub.links)} links were not pinged"
    for fake in fakes:
        await fake.ws.close()
