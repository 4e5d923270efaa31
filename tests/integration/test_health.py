"""Health endpoints: public liveness and the administrator's detailed view."""

from __future__ import annotations

from typing import Any

from beeyard.server.db import migrate


async def test_detailed_health_reports_database_pool_migrations_and_tasks(
    api: Any, db: Any
) -> None:
    status, body = await api.get("/api/admin/health/detailed")
    assert status == 401
    await api.login()
    status, body = await api.get("/api/admin/health/detailed")
    assert status == 200, body
    data = body["data"]
    assert data["status"] == "ok"
    assert data["database"]["ok"] is True
    assert data["database"]["server_version"] == await db.fetchval("SHOW server_version")
    assert data["pool"]["max"] >= data["pool"]["size"] >= 1
    latest = migrate.available()[-1].version
    assert data["migrations"]["current"] == latest
    assert data["migrations"]["pending"] == []
    tasks = {t["name"]: t for t in data["background_tasks"]}
    assert tasks["housekeeping"]["running"] is True


async def test_detailed_health_shows_pending_migrations_as_degraded(api: Any, db: Any) -> None:
    await api.login()
    latest = migrate.available()[-1].version
    await db.execute("DELETE FROM schema_migrations WHERE version = $1", latest)
    status, body = await api.get("/api/admin/health/detailed")
    assert status == 200
    assert body["data"]["status"] == "degraded"
    assert body["data"]["migrations"]["pending"] == [latest]


async def test_migrations_are_idempotent(db: Any) -> None:
    assert await migrate.migrate(db) == []
    rows = await db.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["checksum"]) for r in rows] == [
        (m.version, m.checksum) for m in migrate.available()
    ]
