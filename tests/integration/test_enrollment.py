"""Enrollment: one-time codes (single use, also under a race; expiry; prefix-only
listing; deletion), registration and the run token it returns, rotation."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from tests.conftest import Api
from tests.integration.agentlink import HOST

from beeyard.server import context
from beeyard.server.auth import tokens


async def mint(api: Api, **body: Any) -> dict[str, Any]:
    status, out = await api.post("/api/agent/enrollments", body)
    assert status == 201, out
    return out["data"]  # type: ignore[no-any-return]


async def register(api: Api, code: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    return await api.post("/api/agent/register", {"code": code, "host": HOST, **extra})


async def enroll(api: Api, name: str | None = None) -> tuple[int, str]:
    """Mint a code as the signed-in admin and register with it: (server_id, token)."""
    code = (await mint(api))["code"]
    status, out = await register(api, code, **({"name": name} if name else {}))
    assert status == 201, out
    return out["data"]["server_id"], out["data"]["token"]


async def test_code_is_single_use_and_listed_by_prefix_only(
    api: Api, db: asyncpg.Connection
) -> None:
    await api.login()
    minted = await mint(api)
    code = minted["code"]
    assert len(code) >= 22 and minted["code_prefix"] == code[:8]  # ≥ 128 bits
    assert minted["status"] == "pending"
    status, out = await register(api, code, name="front door")
    assert status == 201, out
    server_id, token = out["data"]["server_id"], out["data"]["token"]
    assert token.startswith("bag_") and len(token) >= 4 + 43  # 256 bits
    row = await db.fetchrow("SELECT * FROM servers WHERE id = $1", server_id)
    assert row["name"] == "front door" and row["hostname"] == "web-1"
    assert row["token_digest"] == tokens.digest(token)
    assert row["host"]["cores"] == 4
    stored = await db.fetchrow("SELECT * FROM enrollments WHERE id = $1", minted["id"])
    assert stored["code_digest"] == tokens.digest(code) and stored["server_id"] == server_id

    status, out = await register(api, code)
    assert status == 401 and "invalid, used or expired" in out["error"]

    status, out = await api.get("/api/agent/enrollments")
    assert status == 200
    (listed,) = out["data"]
    assert listed["status"] == "consumed" and listed["server_id"] == server_id
    assert listed["code_prefix"] == code[:8] and "code" not in listed
    assert code not in str(out)

    actions = await db.fetch("SELECT action, outcome, target FROM audit_logs ORDER BY id")
    assert [a["action"] for a in actions if a["action"] != "auth.login"] == [
        "enrollments.create", "agent.register", "agent.register"]
    assert actions[-2]["target"] == f"server:{server_id}" and actions[-1]["outcome"] == "denied"


async def test_two_registrations_racing_on_one_code(api: Api, db: asyncpg.Connection) -> None:
    await api.login()
    code = (await mint(api))["code"]
    results = await asyncio.gather(*(register(api, code) for _ in range(2)))
    assert sorted(status for status, _ in results) == [201, 401], results
    assert await db.fetchval("SELECT count(*) FROM servers") == 1


async def test_expired_code_is_refused_and_deleted_code_too(
    api: Api, db: asyncpg.Connection
) -> None:
    await api.login()
    minted = await mint(api, ttl_seconds=60)
    await db.execute("UPDATE enrollments SET expires_at = now() - interval '1 second'")
    status, out = await register(api, minted["code"])
    assert status == 401, out
    status, out = await api.get("/api/agent/enrollments")
    assert out["data"][0]["status"] == "expired"

    other = await mint(api)
    status, out = await api.delete(f"/api/agent/enrollments/{other['id']}")
    assert status == 200, out
    status, out = await register(api, other["code"])
    assert status == 401
    status, out = await api.delete(f"/api/agent/enrollments/{other['id']}")
    assert status == 404

    for bad in (59, 86401, "600"):
        status, out = await api.post("/api/agent/enrollments", {"ttl_seconds": bad})
        assert status == 422, out


async def test_consumed_code_cannot_be_deleted(api: Api) -> None:
    await api.login()
    minted = await mint(api)
    status, _ = await register(api, minted["code"])
    assert status == 201
    status, out = await api.delete(f"/api/agent/enrollments/{minted['id']}")
    assert status == 404, out


async def test_registration_is_throttled_per_address(api: Api) -> None:
    for _ in range(5):
        status, _ = await register(api, "not-a-code")
        assert status == 401
    status, out = await register(api, "not-a-code")
    assert status == 429, out


async def test_agent_token_opens_no_user_route_and_bad_token_has_a_code(
    api: Api, new_api: Any
) -> None:
    await api.login()
    _, token = await enroll(api)
    agent = await new_api()
    status, out = await agent.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert status == 403, out
    status, out = await agent.get("/api/agent/ws",
                                  headers={"Authorization": "Bearer bag_nope"})
    assert status == 401 and out["code"] == "unknown_token", out
    status, out = await agent.get("/api/agent/ws", headers={"Authorization": f"Bearer {token}"})
    assert status == 426, out  # the right token, but not a WebSocket
    status, out = await api.get("/api/agent/ws")
    assert status == 403, out  # a person's session does not open the agent link


async def test_rotating_an_offline_agent_revokes_its_token(
    api: Api, new_api: Any, db: asyncpg.Connection
) -> None:
    await api.login()
    server_id, token = await enroll(api)
    status, out = await api.post(f"/api/agent/{server_id}/rotate-token")
    assert status == 200, out
    assert out["data"] == {"server_id": server_id, "delivered": False}
    agent = await new_api()
    status, out = await agent.get("/api/agent/ws", headers={"Authorization": f"Bearer {token}"})
    assert status == 401 and out["code"] == "unknown_token"
    assert await db.fetchval("SELECT token_rotated_at IS NOT NULL FROM servers") is True
    status, out = await api.post("/api/agent/999999/rotate-token")
    assert status == 404


async def test_old_used_and_expired_codes_are_purged(api: Api, db: asyncpg.Connection) -> None:
    from beeyard.server.db import enrollments
    await api.login()
    used = await mint(api)
    status, _ = await register(api, used["code"])
    assert status == 201
    await mint(api)  # pending: kept
    old = await mint(api)
    await db.execute("UPDATE enrollments SET expires_at = now() - interval '31 days' "
                     "WHERE id = $1", old["id"])
    pool = api.client.server.app[context.POOL]
    assert await enrollments.purge(pool) == 1
    await db.execute("UPDATE enrollments SET consumed_at = now() - interval '31 days'")
    assert await enrollments.purge(pool) == 2
    assert await db.fetchval("SELECT count(*) FROM enrollments") == 0


async def test_minting_reads_only_the_pending_codes(api: Api, db: asyncpg.Connection) -> None:
    """A large fleet leaves many used codes behind; the pending count under the mint's
    lock must not read them all (it did: O(fleet) per mint)."""
    await db.execute(
        """INSERT INTO enrollments (code_prefix, code_digest, expires_at, consumed_at)
           SELECT 'used', sha256(i::text::bytea), now() + interval '1 hour', now()
           FROM generate_series(1, 20000) AS i""")
    await db.execute("ANALYZE enrollments")
    plan = "\n".join(r[0] for r in await db.fetch(
        "EXPLAIN SELECT count(*) FROM enrollments "
        "WHERE consumed_at IS NULL AND expires_at > now()"))
    assert "enrollments_pending" in plan and "Seq Scan" not in plan, plan
    await api.login()
    status, body = await api.post("/api/agent/enrollments", {})
    assert status == 201, body
