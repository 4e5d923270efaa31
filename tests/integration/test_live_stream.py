"""Live updates: /api/ws/servers and /api/stream send a snapshot, then changes; every
credential works where it should, a cookie from a foreign origin does not, and a slow
client is dropped without holding anyone up."""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import Api
from tests.fleetdata import add_server, metrics
from tests.integration.agentlink import METRICS, FakeAgent, summary
from tests.integration.test_enrollment import enroll

from beeyard.server import context
from beeyard.server.api import live as live_api
from beeyard.server.app import create_app

Client = TestClient  # type: ignore[type-arg]


async def _key(api: Api, scope: str = "read") -> str:
    status, body = await api.post("/api/auth/api-keys", {"name": f"live {scope}", "scope": scope})
    assert status == 201, body
    return body["data"]["key"]  # type: ignore[no-any-return]


_PENDING: weakref.WeakKeyDictionary[Any, list[dict[str, Any]]] = weakref.WeakKeyDictionary()


async def _receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next event: the snapshot is a frame of its own, later frames are arrays."""
    pending = _PENDING.setdefault(ws, [])
    if not pending:
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data = json.loads(msg.data)
        if isinstance(data, dict):
            assert data["type"] == "snapshot", data
            return data  # type: ignore[no-any-return]
        assert isinstance(data, list) and data, data
        pending.extend(data)
    return pending.pop(0)


async def _snapshot_then_sample(
    ws: aiohttp.ClientWebSocketResponse, client: Client, server: int
) -> None:
    snap = await _receive(ws)
    assert snap["type"] == "snapshot"
    (entry,) = [s for s in snap["servers"] if s["id"] == server]
    assert entry["name"] == "web-1" and entry["online"] is False
    live = client.server.app[context.LIVE]
    live.mark_online(server)
    live.record_sample(server, time.time(), metrics(cpu=77.0))
    online = await _receive(ws)
    assert online["type"] == "online" and online["server_id"] == server
    sample = await _receive(ws)
    assert sample["type"] == "sample" and sample["values"]["cpu"] == 77.0
    assert "metrics" not in sample  # the fleet-wide stream carries summary values only


async def test_websocket_with_a_cookie_from_our_origin(
    api: Api, client: Client, db: asyncpg.Connection
) -> None:
    await api.login()
    server = await add_server(db, "web-1")
    origin = f"http://{client.host}:{client.port}"
    async with client.ws_connect("/api/ws/servers", headers={"Origin": origin}) as ws:
        await _snapshot_then_sample(ws, client, server)


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1"])
async def test_websocket_cookie_from_another_origin_is_refused(
    api: Api, client: Client, origin: str
) -> None:
    await api.login()
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect("/api/ws/servers", headers={"Origin": origin})
    assert caught.value.status == 403


async def test_websocket_with_api_key_and_bearer(
    api: Api, client: Client, db: asyncpg.Connection, new_api: Any
) -> None:
    await api.login()
    server = await add_server(db, "web-1")
    key = await _key(api)
    other = await new_api()  # no cookie
    # An API key works from anywhere: a foreign page cannot attach the header.
    async with other.client.ws_connect("/api/ws/servers", headers={
            "X-API-Key": key, "Origin": "http://elsewhere.example"}) as ws:
        await _snapshot_then_sample(ws, client, server)
    status, body = await other.post("/api/mobile/auth/login", {
        "username": "admin", "password": "correct horse battery staple",
        "device_name": "phone"})
    assert status == 200, body
    bearer = body["data"]["access_token"]
    async with other.client.ws_connect(
            "/api/ws/servers", headers={"Authorization": f"Bearer {bearer}"}) as ws:
        snap = await _receive(ws)
        assert snap["type"] == "snapshot"
        client.server.app[context.LIVE].remove(server)
        assert await _receive(ws) == {"type": "server_removed", "server_id": server}


async def test_websocket_refusals(client: Client, new_api: Any) -> None:
    anonymous = await new_api()
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await anonymous.client.ws_connect("/api/ws/servers")
    assert caught.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await anonymous.client.ws_connect(
            "/api/ws/servers", headers={"Authorization": "Bearer beeyard_nope"})
    assert caught.value.status == 401
    api = await new_api()
    await api.login()
    status, body = await api.get("/api/ws/servers")  # no upgrade
    assert status == 426 and "WebSocket" in body["error"]


async def test_a_slow_websocket_client_is_dropped(
    api: Api, client: Client, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_api, "BUFFER", 2000)
    await api.login()
    server = await add_server(db, "web-1")
    live = client.server.app[context.LIVE]
    origin = f"http://{client.host}:{client.port}"
    async with client.ws_connect("/api/ws/servers", headers={"Origin": origin}) as slow, \
            client.ws_connect("/api/ws/servers", headers={"Origin": origin}) as fine:
        assert (await _receive(slow))["type"] == "snapshot"
        assert (await _receive(fine))["type"] == "snapshot"
        # More events than a subscriber may buffer, published while nobody can read:
        # publishing does not wait, and both streams overflow.
        started = time.perf_counter()
        for i in range(3000):
            live.record_sample(server, 1e9 + i, metrics())
        assert time.perf_counter() - started < 5
        msg = await asyncio.wait_for(slow.receive(), 5)
        while msg.type == aiohttp.WSMsgType.TEXT:
            msg = await asyncio.wait_for(slow.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4008
    # A new connection starts from a fresh snapshot and gets changes again.
    async with client.ws_connect("/api/ws/servers", headers={"Origin": origin}) as ws:
        assert (await _receive(ws))["type"] == "snapshot"
        live.record_sample(server, time.time(), metrics(cpu=1.0))
        assert (await _receive(ws))["type"] == "sample"


async def _sse_events(resp: aiohttp.ClientResponse, count: int) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    name = None
    while len(events) < count:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name or "message", json.loads(line[6:])))
    return events


async def test_server_sent_events(api: Api, client: Client, db: asyncpg.Connection) -> None:
    await api.login()
    server = await add_server(db, "web-1")
    live = client.server.app[context.LIVE]
    async with client.get("/api/stream") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        ((name, snap),) = await _sse_events(resp, 1)
        assert name == "snapshot" and snap["servers"][0]["id"] == server
        live.record_sample(server, time.time(), metrics(cpu=33.0))
        live.server_updated(server, {"name": "renamed"})
        (n1, sample), (n2, updated) = await _sse_events(resp, 2)
        assert n1 == "sample" and sample["values"]["cpu"] == 33.0
        assert n2 == "server_updated" and updated["fields"] == {"name": "renamed"}


async def test_server_sent_events_with_api_key(api: Api, client: Client, new_api: Any) -> None:
    await api.login()
    key = await _key(api)
    other = await new_api()
    async with other.client.get("/api/stream",
                                headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 200
        ((name, _),) = await _sse_events(resp, 1)
        assert name == "snapshot"
    async with other.client.get("/api/stream") as resp:
        assert resp.status == 401 and resp.content_type == "application/json"


async def test_streams_end_when_the_server_stops(
    settings: Any, aiohttp_client: Any, db: asyncpg.Connection
) -> None:
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    await api.login()
    resp = await client.get("/api/stream")
    await _sse_events(resp, 1)
    started = time.perf_counter()
    await client.close()
    assert time.perf_counter() - started < 5


async def test_end_to_end_through_the_agent_link(
    api: Api, client: Client, db: asyncpg.Connection
) -> None:
    """A real protocol client as the agent: its samples reach a browser WebSocket, its
    summaries the records API; deleting the server ends its link for good."""
    await api.login()
    server_id, token = await enroll(api, name="e2e-1")
    origin = f"http://{client.host}:{client.port}"
    async with client.ws_connect("/api/ws/servers", headers={"Origin": origin}) as browser:
        snap = await _receive(browser)
        assert [s["id"] for s in snap["servers"]] == [server_id]
        agent, welcome = await FakeAgent.start(client, token)
        assert welcome.type == "welcome"
        now = time.time()
        await agent.send("sample", {"ts": now, "metrics": {**METRICS, "cpu": 61.0}})
        seen: list[dict[str, Any]] = []
        while not any(e["type"] == "sample" for e in seen):
            seen.append(await _receive(browser))
        assert seen[0]["type"] == "online"
        assert seen[-1]["server_id"] == server_id and seen[-1]["values"]["cpu"] == 61.0

        minute = int(now // 60) * 60 - 120
        await agent.send("summary", summary(minute, cpu=44.0))
        ack = await agent.recv()
        assert ack.type == "ack" and ack.body["minutes"] == [minute]
        status, body = await api.get(f"/api/servers/{server_id}/records")
        assert status == 200
        points = body["data"]["points"]
        assert body["data"]["tier"] == "minute"
        assert [p["ts"] for p in points] == [minute]
        assert points[0]["values"]["cpu"] == {"avg": 44.0, "min": 39.0, "max": 49.0}

        status, body = await api.get("/api/servers")
        (entry,) = body["data"]
        assert entry["online"] is True and entry["latest"]["metrics"]["cpu"] == 61.0
        assert entry["host"]["hostname"] == "web-1"

        status, _ = await api.delete(f"/api/servers/{server_id}")
        assert status == 200
        frames = await agent.closed()
        bye = [f for f in frames if f.type == "bye"]
        assert bye and bye[0].body["code"] == "revoked" and bye[0].body["retry"] is False
        while True:
            event = await _receive(browser)
            if event["type"] == "server_removed":
                break
    # the token is gone with the server: the agent cannot come back
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await FakeAgent.connect(client, token)
    assert caught.value.status == 401


async def test_a_revoked_credential_ends_open_streams(
    api: Api, client: Client, new_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_api, "REAUTH", 0.2)
    await api.login()
    _, body = await api.post("/api/auth/api-keys", {"name": "sse", "scope": "read"})
    key, key_id = body["data"]["key"], body["data"]["id"]
    other = await new_api()
    origin = f"http://{client.host}:{client.port}"
    async with client.ws_connect("/api/ws/servers", headers={"Origin": origin}) as ws, \
            other.client.get("/api/stream", headers={"X-API-Key": key}) as sse:
        assert (await _receive(ws))["type"] == "snapshot"
        assert (await _sse_events(sse, 1))[0][0] == "snapshot"
        await asyncio.sleep(0.5)  # still valid: both stay open
        assert not ws.closed
        assert (await api.delete(f"/api/auth/api-keys/{key_id}"))[0] == 200
        assert (await asyncio.wait_for(sse.content.read(), 5)).strip() == b""  # it ends
        assert (await api.post("/api/auth/logout"))[0] == 200
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001


async def test_changes_come_in_batches_in_order(
    api: Api, client: Client, db: asyncpg.Connection
) -> None:
    """Changes published while a frame is on its way go out together in the next one:
    far fewer frames than changes, none lost, order kept."""
    await api.login()
    server = await add_server(db, "web-1")
    live = client.server.app[context.LIVE]
    origin = f"http://{client.host}:{client.port}"
    async with client.ws_connect("/api/ws/servers", headers={"Origin": origin}) as ws:
        assert (await _receive(ws))["type"] == "snapshot"
        for i in range(200):
            live.record_sample(server, 1e9 + i, metrics(cpu=float(i % 100)))
        frames: list[list[dict[str, Any]]] = []
        while sum(len(f) for f in frames) < 200:
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == aiohttp.WSMsgType.TEXT
            frames.append(json.loads(msg.data))
        assert len(frames) < 20
        events = [e for f in frames for e in f]
        assert [e["ts"] for e in events] == [1e9 + i for i in range(200)]


async def test_watching_one_server(api: Api, client: Client, db: asyncpg.Connection) -> None:
    """``?server_id=`` gives that server's snapshot and events only, with full metrics."""
    await api.login()
    watched = await add_server(db, "web-1")
    other = await add_server(db, "web-2")
    live = client.server.app[context.LIVE]
    origin = f"http://{client.host}:{client.port}"
    async with client.ws_connect(f"/api/ws/servers?server_id={watched}",
                                 headers={"Origin": origin}) as ws, \
            client.get(f"/api/stream?server_id={watched}") as sse:
        snap = await _receive(ws)
        assert [s["id"] for s in snap["servers"]] == [watched]
        ((name, sse_snap),) = await _sse_events(sse, 1)
        assert [s["id"] for s in sse_snap["servers"]] == [watched]
        live.record_sample(other, time.time(), metrics(cpu=5.0))
        live.server_updated(other, {"name": "elsewhere"})
        live.record_sample(watched, time.time(), metrics(cpu=66.0))
        event = await _receive(ws)
        assert event["server_id"] == watched and event["type"] == "sample"
        assert event["metrics"]["cpu"] == 66.0 and event["values"]["cpu"] == 66.0
        assert event["metrics"]["memory"]["total"] > 0
        ((name, sse_event),) = await _sse_events(sse, 1)
        assert name == "sample" and sse_event == event
    assert live.subscriber_count == 0
    status, body = await api.get("/api/stream?server_id=999999")
    assert status == 404 and "999999" in body["error"]
    status, body = await api.get("/api/stream?server_id=web-1")
    assert status == 422 and "server_id" in body["error"]
    for query, code in (("999999", 404), ("web-1", 422)):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(f"/api/ws/servers?server_id={query}",
                                    headers={"Origin": origin})
        assert refused.value.status == code
