"""Liveness for load balancers, and a detailed view for administrators."""

from __future__ import annotations

import time

from aiohttp import web

from beeyard.server import __version__, context
from beeyard.server.auth.principal import Access
from beeyard.server.db import health as db
from beeyard.server.http.envelope import ok
from beeyard.server.http.routing import route

_HEALTH = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ok"]},
        "version": {"type": "string"},
        "uptime_seconds": {"type": "number"},
    },
}


@route("GET", "/api/health", Access.PUBLIC, "health.get", tags=("health",), response=_HEALTH)
async def health(request: web.Request) -> web.Response:
    """Liveness: the process is up and serving."""
    return ok({
        "status": "ok",
        "version": __version__,
        "uptime_seconds": round(context.uptime(request.app), 3),
    })


@route("GET", "/api/admin/health/detailed", Access.ADMIN, "health.detailed", tags=("health",))
async def detailed(request: web.Request) -> web.Response:
    """Database, connection pool, migrations and background tasks."""
    pool = context.pool(request)
    settings = context.settings(request)
    started = time.perf_counter()
    database = await db.facts(pool)
    latency_ms = (time.perf_counter() - started) * 1000
    tasks = [job.describe() for job in request.app[context.TASKS].values()]
    degraded = database.migrations["pending"] or any(not t["running"] for t in tasks)
    return ok({
        "status": "degraded" if degraded else "ok",
        "version": __version__,
        "uptime_seconds": round(context.uptime(request.app), 3),
        "database": {
            "ok": True,
            "embedded": settings.embedded,
            "server_version": database.server_version,
            "size_bytes": database.size_bytes,
            "latency_ms": round(latency_ms, 3),
        },
        "pool": {
            "size": pool.get_size(),
            "idle": pool.get_idle_size(),
            "min": pool.get_min_size(),
            "max": pool.get_max_size(),
        },
        "migrations": database.migrations,
        "background_tasks": tasks,
    })


ROUTES = [health, detailed]
