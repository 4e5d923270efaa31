"""Server groups and tags: CRUD, case-insensitive unique names (409), and what deleting
one does to its servers (nothing but ungroup or untag them)."""

from __future__ import annotations

from typing import Any

import asyncpg
from tests.conftest import Api
from tests.fleetdata import add_server


async def test_group_crud_and_duplicates(api: Api) -> None:
    await api.login()
    status, body = await api.post("/api/server-groups", {"name": "  Web   servers "})
    assert status == 201, body
    group = body["data"]
    assert group["name"] == "Web servers" and group["server_count"] == 0
    status, body = await api.post("/api/server-groups", {"name": "web SERVERS"})
    assert status == 409 and "already exists" in body["error"]
    status, body = await api.post("/api/server-groups", {"name": "Databases"})
    assert status == 201
    other = body["data"]["id"]
    status, body = await api.put(f"/api/server-groups/{other}", {"name": "WEB servers"})
    assert status == 409
    status, body = await api.put(f"/api/server-groups/{other}", {"name": "DB"})
    assert status == 200 and body["data"]["name"] == "DB"
    status, body = await api.get("/api/server-groups")
    assert [g["name"] for g in body["data"]] == ["DB", "Web servers"]
    status, body = await api.post("/api/server-groups", {"name": "   "})
    assert status == 422
    status, body = await api.delete(f"/api/server-groups/{other}")
    assert status == 200
    status, body = await api.delete(f"/api/server-groups/{other}")
    assert status == 404
    status, body = await api.put("/api/server-groups/424242", {"name": "x"})
    assert status == 404


async def test_tag_crud_and_duplicates(api: Api) -> None:
    await api.login()
    status, body = await api.post("/api/server-tags", {"name": "prod"})
    assert status == 201
    tag = body["data"]["id"]
    status, body = await api.post("/api/server-tags", {"name": "PROD"})
    assert status == 409
    status, body = await api.put(f"/api/server-tags/{tag}", {"name": "production"})
    assert status == 200 and body["data"]["name"] == "production"
    status, body = await api.get("/api/server-tags")
    assert [t["name"] for t in body["data"]] == ["production"]
    status, body = await api.delete(f"/api/server-tags/{tag}")
    assert status == 200
    status, body = await api.get("/api/server-tags")
    assert body["data"] == []


async def test_deleting_a_group_or_tag_keeps_its_servers(
    api: Api, db: asyncpg.Connection
) -> None:
    await api.login()
    server = await add_server(db, "web-1")
    _, body = await api.post("/api/server-groups", {"name": "web"})
    group = body["data"]["id"]
    _, body = await api.post("/api/server-tags", {"name": "eu"})
    tag = body["data"]["id"]
    status, body = await api.put(f"/api/servers/{server}", {"group_id": group, "tags": [tag]})
    assert status == 200, body
    assert body["data"]["group"] == {"id": group, "name": "web"}
    assert body["data"]["tags"] == [{"id": tag, "name": "eu"}]
    _, body = await api.get("/api/server-groups")
    assert body["data"][0]["server_count"] == 1
    _, body = await api.get("/api/server-tags")
    assert body["data"][0]["server_count"] == 1

    assert (await api.delete(f"/api/server-groups/{group}"))[0] == 200
    assert (await api.delete(f"/api/server-tags/{tag}"))[0] == 200
    status, body = await api.get(f"/api/servers/{server}")
    assert status == 200
    assert body["data"]["group"] is None and body["data"]["tags"] == []


async def test_writes_need_admin(api: Api, new_api: Any, db: asyncpg.Connection) -> None:
    await api.login()
    status, body = await api.post(
        "/api/users", {"username": "vera", "password": "viewer passphrase 1", "role": "viewer"}
    )
    assert status == 201, body
    viewer = await new_api()
    await viewer.login("vera", "viewer passphrase 1")
    assert (await viewer.get("/api/server-groups"))[0] == 200
    assert (await viewer.get("/api/server-tags"))[0] == 200
    assert (await viewer.post("/api/server-groups", {"name": "x"}))[0] == 403
    assert (await viewer.post("/api/server-tags", {"name": "x"}))[0] == 403
