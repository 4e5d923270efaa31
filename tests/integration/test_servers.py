"""The servers API: records from the database joined with the live state from memory."""

from __future__ import annotations

import time

import asyncpg
from aiohttp.test_utils import TestClient
from tests.conftest import Api
from tests.fleetdata import add_minute, add_server, metrics, utc

from beeyard.server import context


async def test_list_joins_database_and_live_state(
    api: Api, client: TestClient, db: asyncpg.Connection  # type: ignore[type-arg]
) -> None:
    await api.login()
    quiet = await add_server(db, "b-quiet", hostname="quiet", host={"os": "Debian", "cores": 2})
    busy = await add_server(db, "a-busy")
    live = client.server.app[context.LIVE]
    live.mark_online(busy)
    now = time.time()
    live.record_sample(busy, now, metrics(cpu=42.0))

    status, body = await api.get("/api/servers")
    assert status == 200
    servers = body["data"]
    assert [s["name"] for s in servers] == ["a-busy", "b-quiet"]
    a, b = servers
    assert a["online"] is True and a["latest"]["ts"] == now
    assert a["latest"]["metrics"]["cpu"] == 42.0
    assert a["latest"]["values"]["cpu"] == 42.0 and a["interval"] == 1.0
    assert a["last_seen"] is not None
    assert b["online"] is False and b["latest"] is None and b["last_seen"] is None
    assert b["host"] == {"os": "Debian", "cores": 2} and b["hostname"] == "quiet"
    assert b["group"] is None and b["tags"] == [] and b["traffic_reset_day"] == 1
    assert "token_digest" not in b

    status, body = await api.get(f"/api/servers/{quiet}")
    assert status == 200 and body["data"]["name"] == "b-quiet"
    for missing in ("999999", "0", "-3"):
        status, body = await api.get(f"/api/servers/{missing}")
        assert status == 404 and "not found" in body["error"]
    assert (await api.get("/api/servers/abc"))[0] == 422


async def test_update_fields_and_live_event(
    api: Api, client: TestClient, db: asyncpg.Connection  # type: ignore[type-arg]
) -> None:
    await api.login()
    server = await add_server(db, "old")
    _, body = await api.post("/api/server-groups", {"name": "g"})
    group = body["data"]["id"]
    _, body = await api.post("/api/server-tags", {"name": "t1"})
    t1 = body["data"]["id"]
    _, body = await api.post("/api/server-tags", {"name": "t2"})
    t2 = body["data"]["id"]
    live = client.server.app[context.LIVE]
    with live.subscribe() as sub:
        status, body = await api.put(f"/api/servers/{server}", {
            "name": " new ", "group_id": group, "tags": [t2, t1, t1], "notes": "rack 4",
            "traffic_reset_day": 15,
        })
        assert status == 200, body
        events = sub.drain()
    s = body["data"]
    assert s["name"] == "new" and s["notes"] == "rack 4" and s["traffic_reset_day"] == 15
    assert s["group"]["id"] == group and [t["name"] for t in s["tags"]] == ["t1", "t2"]
    assert events[-1]["type"] == "server_updated" and events[-1]["fields"]["name"] == "new"

    # Omitted fields stay; null group_id ungroups; tags replace the set.
    status, body = await api.put(f"/api/servers/{server}", {"tags": [t1]})
    assert body["data"]["group"]["id"] == group and [t["id"] for t in body["data"]["tags"]] == [t1]
    status, body = await api.put(f"/api/servers/{server}", {"group_id": None})
    assert body["data"]["group"] is None and body["data"]["name"] == "new"

    assert (await api.put(f"/api/servers/{server}", {"group_id": 999}))[0] == 422
    status, body = await api.put(f"/api/servers/{server}", {"tags": [t1, 999]})
    assert status == 422 and "999" in body["error"]
    assert (await api.put(f"/api/servers/{server}", {"traffic_reset_day": 32}))[0] == 422
    assert (await api.put(f"/api/servers/{server}", {"name": "  "}))[0] == 422
    assert (await api.put(f"/api/servers/{server}", {"colour": "red"}))[0] == 422
    assert (await api.put("/api/servers/999999", {"name": "x"}))[0] == 404
    # The failed updates changed nothing.
    _, body = await api.get(f"/api/servers/{server}")
    assert [t["id"] for t in body["data"]["tags"]] == [t1]


async def test_delete_drops_history_and_tells_subscribers(
    api: Api, client: TestClient, db: asyncpg.Connection  # type: ignore[type-arg]
) -> None:
    await api.login()
    server = await add_server(db, "doomed")
    keep = await add_server(db, "kept")
    for sid in (server, keep):
        await add_minute(db, sid, utc(2026, 1, 5, 10, 0))
    await db.execute("SELECT metrics_hour_partition('2026-01-05')")
    await db.execute(
        "INSERT INTO metrics_hour (server_id, bucket, samples, minutes) VALUES ($1, $2, 60, 1)",
        server, utc(2026, 1, 5, 10),
    )
    _, body = await api.post("/api/server-tags", {"name": "t"})
    await api.put(f"/api/servers/{server}", {"tags": [body["data"]["id"]]})
    live = client.server.app[context.LIVE]
    live.mark_online(server)
    with live.subscribe() as sub:
        status, body = await api.delete(f"/api/servers/{server}")
        assert status == 200, body
        events = sub.drain()
    assert {"type": "server_removed", "server_id": server} in events
    assert live.latest(server) is None and not live.online(server)
    assert await db.fetchval("SELECT count(*) FROM metrics_minute WHERE server_id = $1",
                             server) == 0
    assert await db.fetchval("SELECT count(*) FROM metrics_hour WHERE server_id = $1",
                             server) == 0
    assert await db.fetchval("SELECT count(*) FROM server_tag_links") == 0
    assert await db.fetchval("SELECT count(*) FROM metrics_minute WHERE server_id = $1",
                             keep) == 1
    assert (await api.get(f"/api/servers/{server}"))[0] == 404
    assert (await api.delete(f"/api/servers/{server}"))[0] == 404
    audit = await db.fetchrow("SELECT * FROM audit_logs WHERE target = $1 AND outcome = 'success'",
                              f"server:{server}")
    assert audit is not None
