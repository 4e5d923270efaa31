"""Housekeeping: what can no longer be used, or is past keeping, is deleted; what is
still in use, or still worth looking up, stays."""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path
from typing import Any

import pytest

from beeyard.server.app import create_app
from beeyard.server.config import ConfigError, load
from beeyard.server.services.housekeeping import purge_expired


async def _session(db: Any, name: str, *, expires: str, revoked: str | None = None) -> None:
    await db.execute(
        """INSERT INTO sessions (user_id, token_digest, csrf_token, expires_at, revoked_at)
           VALUES (1, $1, $2, now() + ($3::text)::interval, now() - ($4::text)::interval)""",
        secrets.token_bytes(32), name, expires, revoked,
    )


async def _key(db: Any, name: str, *, revoked: str | None, expires: str | None = None) -> None:
    await db.execute(
        """INSERT INTO api_keys (user_id, name, key_prefix, key_digest, scope, revoked_at,
                                 expires_at)
           VALUES (1, $1, 'abcdefgh', $2, 'full', now() - ($3::text)::interval,
                   now() - ($4::text)::interval)""",
        name, secrets.token_bytes(32), revoked, expires,
    )


async def _device(db: Any, name: str, *, revoked: str | None, last_seen: str = "0 days",
                  refresh_expires: str | None = None) -> None:
    # One transaction: the app's own housekeeping job (started with the app) may run at
    # any moment and must not purge the device between its row and its token's.
    async with db.transaction():
        await _device_rows(db, name, revoked, last_seen, refresh_expires)


async def _device_rows(db: Any, name: str, revoked: str | None, last_seen: str,
                       refresh_expires: str | None) -> None:
    device = await db.fetchval(
        """INSERT INTO mobile_devices (user_id, device_name, revoked_at, last_seen_at)
           VALUES (1, $1, now() - ($2::text)::interval, now() - ($3::text)::interval)
           RETURNING id""",
        name, revoked, last_seen,
    )
    if refresh_expires is not None:
        await db.execute(
            """INSERT INTO mobile_tokens (device_id, kind, token_digest, expires_at)
               VALUES ($1, 'refresh', $2, now() + ($3::text)::interval)""",
            device, secrets.token_bytes(32), refresh_expires,
        )


async def _audit(db: Any, action: str, age: str) -> None:
    await db.execute(
        "INSERT INTO audit_logs (at, action, outcome) VALUES (now() - ($2::text)::interval, $1, "
        "'success')", action, age,
    )


async def test_housekeeping_purges_what_is_past_keeping(client: Any, db: Any) -> None:
    await _session(db, "expired long ago", expires="-2 days")
    await _session(db, "revoked long ago", expires="5 days", revoked="2 days")
    await _session(db, "revoked just now", expires="5 days", revoked="1 minute")
    await _session(db, "active", expires="5 days")
    await _key(db, "revoked long ago", revoked="91 days")
    await _key(db, "revoked lately", revoked="89 days")
    await _key(db, "expired long ago", revoked=None, expires="400 days")
    await _key(db, "active", revoked=None)
    await _device(db, "revoked long ago", revoked="91 days", refresh_expires="20 days")
    await _device(db, "revoked lately", revoked="10 days", refresh_expires="20 days")
    await _device(db, "lapsed long ago", revoked=None, last_seen="100 days")
    await _device(db, "lapsed lately", revoked=None, last_seen="30 days")
    await _device(db, "token expired", revoked=None, refresh_expires="-2 days")
    await _device(db, "active", revoked=None, refresh_expires="20 days")
    await _audit(db, "too old", "366 days")
    await _audit(db, "old enough", "364 days")

    await purge_expired(client.server.app)

    async def names(sql: str) -> set[str]:
        return {r[0] for r in await db.fetch(sql)}

    assert await names("SELECT csrf_token FROM sessions") == {"revoked just now", "active"}
    assert await names("SELECT name FROM api_keys") == {
        "revoked lately", "expired long ago", "active"}
    assert await names("SELECT device_name FROM mobile_devices") == {
        "revoked lately", "lapsed lately", "token expired", "active"}
    assert await db.fetchval("SELECT count(*) FROM mobile_tokens") == 2  # their devices went
    assert "too old" not in await names("SELECT action FROM audit_logs")
    assert "old enough" in await names("SELECT action FROM audit_logs")


async def test_audit_retention_is_a_setting(
    settings: Any, aiohttp_client: Any, db: Any
) -> None:
    client = await aiohttp_client(create_app(dataclasses.replace(settings,
                                                                 audit_retention_days=30)))
    await _audit(db, "31 days", "31 days")
    await _audit(db, "29 days", "29 days")
    await purge_expired(client.server.app)
    actions = {r["action"] for r in await db.fetch("SELECT action FROM audit_logs")}
    assert "31 days" not in actions and "29 days" in actions


def test_audit_retention_comes_from_the_environment(tmp_path: Path) -> None:
    def days(value: str | None) -> int:
        env = {"BEEYARD_DATA_DIR": str(tmp_path)}
        if value is not None:
            env["BEEYARD_AUDIT_RETENTION_DAYS"] = value
        return load(env=env).audit_retention_days

    assert days(None) == 365
    assert days("30") == 30
    for bad in ("0", "-1", "a year"):
        with pytest.raises(ConfigError, match="BEEYARD_AUDIT_RETENTION_DAYS"):
            days(bad)
