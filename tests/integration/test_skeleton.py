"""The HTTP edge: envelope, request ids, security headers, size limits, declared routes."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from beeyard.server.app import create_app


async def test_health_is_public_and_enveloped(api: Any) -> None:
    status, body = await api.get("/api/health")
    assert status == 200
    assert body["data"]["status"] == "ok"
    assert body["data"]["uptime_seconds"] >= 0


async def test_unknown_path_and_method_are_json(client: Any) -> None:
    async with client.get("/api/nope", headers={"Accept": "text/html"}) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]
    async with client.delete("/api/health") as resp:
        assert resp.status == 405
        assert "GET" in (await resp.json())["error"]
        assert resp.headers["Allow"] == "GET"


async def test_request_id_generated_or_honoured(client: Any) -> None:
    async with client.get("/api/health") as resp:
        assert len(resp.headers["X-Request-Id"]) == 32
    async with client.get("/api/health", headers={"X-Request-Id": "trace-123"}) as resp:
        assert resp.headers["X-Request-Id"] == "trace-123"
    async with client.get("/api/health", headers={"X-Request-Id": "bad id\twith<junk>"}) as resp:
        assert resp.headers["X-Request-Id"] != "bad id\twith<junk>"


async def test_security_headers(client: Any) -> None:
    async with client.get("/api/health") as resp:
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY"


async def test_undeclared_route_refuses_start(settings: Any, aiohttp_client: Any) -> None:
    app = create_app(settings)

    async def sneaky(request: web.Request) -> web.Response:
        return web.Response(text="open by omission")

    app.router.add_get("/api/sneaky", sneaky)
    with pytest.raises(RuntimeError, match="/api/sneaky"):
        await aiohttp_client(app)
