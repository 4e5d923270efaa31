"""Mobile bearer sessions against the real database: sign-in, rotation, reuse, devices."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pyotp

from beeyard.server import context
from beeyard.server.auth.passwords import hash_sync
from conftest import ADMIN_PASSWORD

PASSWORD = "members only, please"
HEALTH = "/api/admin/health/detailed"  # an admin route to prove a token authenticates
DEVICES = "/api/mobile/auth/devices"


def sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_user(db: Any, username: str, role: str = "member", password: str = PASSWORD) -> int:
    """Users straight into the table: the users API belongs to another module."""
    return int(await db.fetchval(
        "INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3) RETURNING id",
        username, hash_sync(password), role,
    ))


async def mobile_login(
    api: Any, username: str = "admin", password: str = ADMIN_PASSWORD, device: str = "phone",
    **extra: Any,
) -> dict[str, Any]:
    status, body = await api.post("/api/mobile/auth/login", {
        "username": username, "password": password, "device_name": device, **extra,
    })
    assert status == 200, body
    return body["data"]  # type: ignore[no-any-return]


async def refresh(api: Any, token: str) -> tuple[int, dict[str, Any]]:
    return await api.post("/api/mobile/auth/refresh", {"refresh_token": token})  # type: ignore[no-any-return]


async def test_login_issues_a_bearer_pair_stored_only_as_digests(
    api: Any, db: Any, settings: Any
) -> None:
    data = await mobile_login(api, device="Ana's phone")
    assert data["access_token"].startswith("bya_")
    assert data["refresh_token"].startswith("byr_")
    assert data["token_type"] == "Bearer"
    assert data["expires_in"] == settings.access_token_ttl
    assert data["refresh_expires_in"] == settings.refresh_token_ttl
    assert data["user"]["username"] == "admin"
    assert data["user"]["role"] == "admin"

    device = await db.fetchrow("SELECT * FROM mobile_devices WHERE id = $1", data["device_id"])
    assert device["device_name"] == "Ana's phone"
    assert device["user_id"] == data["user"]["id"]
    assert device["revoked_at"] is None
    rows = await db.fetch(
        "SELECT kind, token_digest, expires_at - created_at AS ttl FROM mobile_tokens "
        "WHERE device_id = $1 ORDER BY kind", data["device_id"],
    )
    assert [r["kind"] for r in rows] == ["access", "refresh"]
    assert bytes(rows[0]["token_digest"]) == sha256(data["access_token"])
    assert bytes(rows[1]["token_digest"]) == sha256(data["refresh_token"])
    assert rows[0]["ttl"].total_seconds() == settings.access_token_ttl
    assert rows[1]["ttl"].total_seconds() == settings.refresh_token_ttl

    # The access token authenticates REST calls, with the user's role.
    status, body = await api.get(HEALTH, headers=bearer(data["access_token"]))
    assert status == 200, body
    # The refresh token is not an access token.
    status, body = await api.get(HEALTH, headers=bearer(data["refresh_token"]))
    assert status == 401


async def test_login_failures_create_nothing(api: Any, db: Any) -> None:
    status, body = await api.post("/api/mobile/auth/login", {
        "username": "admin", "password": "wrong password!", "device_name": "phone",
    })
    assert status == 401
    assert body["error"] == "invalid username or password"
    status, body = await api.post("/api/mobile/auth/login", {
        "username": "nobody", "password": "wrong password!", "device_name": "phone",
    })
    assert status == 401
    assert body["error"] == "invalid username or password"
    assert await db.fetchval("SELECT count(*) FROM mobile_devices") == 0
    assert await db.fetchval("SELECT count(*) FROM mobile_tokens") == 0


async def test_login_rejects_bad_input_with_precise_4xx(api: Any, client: Any) -> None:
    status, body = await api.post("/api/mobile/auth/login", {
        "username": "admin", "password": ADMIN_PASSWORD,
    })
    assert status == 422
    assert body["error"] == "device_name: is required"
    status, body = await api.post("/api/mobile/auth/login", {
        "username": "admin", "password": ADMIN_PASSWORD, "device_name": "   ",
    })
    assert status == 422
    assert "device_name" in body["error"]
    status, body = await api.post("/api/mobile/auth/login", {
        "username": "admin", "password": 12, "device_name": "x",
    })
    assert status == 422
    assert body["error"] == "password: must be a string"
    async with client.post(
        "/api/mobile/auth/login", data=b"{not json", headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
        assert "not valid JSON" in (await resp.json())["error"]
    status, body = await refresh(api, "")
    assert status == 422
    status, body = await api.post("/api/mobile/auth/refresh", {"refresh_token": ["byr_x"]})
    assert status == 422
    status, body = await refresh(api, "beeyard_not_a_refresh_token")
    assert status == 401
    assert "byr_" in body["error"]
    status, body = await refresh(api, "byr_" + "x" * 43)
    assert status == 401
    assert body["error"] == "invalid refresh token; sign in again"


async def test_refresh_rotates_and_reuse_revokes_the_whole_family(api: Any, db: Any) -> None:
    first = await mobile_login(api)
    status, body = await refresh(api, first["refresh_token"])
    assert status == 200, body
    second = body["data"]
    assert second["device_id"] == first["device_id"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["token_type"] == "Bearer"
    rotated = await db.fetchval(
        "SELECT rotated_at FROM mobile_tokens WHERE token_digest = $1",
        sha256(first["refresh_token"]),
    )
    assert rotated is not None
    status, _ = await api.get(HEALTH, headers=bearer(second["access_token"]))
    assert status == 200

    # The second pair rotates on as well: a chain, not a single use.
    status, body = await refresh(api, second["refresh_token"])
    assert status == 200
    third = body["data"]
    status, _ = await api.get(HEALTH, headers=bearer(third["access_token"]))
    assert status == 200

    # Someone presents the first refresh token again: reuse.
    status, body = await refresh(api, first["refresh_token"])
    assert status == 401
    assert "already used" in body["error"]
    # Every token of the family is dead now, the newest pair included.
    status, body = await api.get(HEALTH, headers=bearer(third["access_token"]))
    assert status == 401
    status, body = await refresh(api, third["refresh_token"])
    assert status == 401
    assert body["error"] == "this device has been signed out; sign in again"
    assert await db.fetchval(
        "SELECT revoked_at FROM mobile_devices WHERE id = $1", first["device_id"]
    ) is not None
    audit = await db.fetchrow(
        "SELECT outcome, status, target, actor, detail FROM audit_logs "
        "WHERE action = 'mobile.refresh' AND detail->>'reason' = 'reused'"
    )
    assert audit["actor"] == "admin"  # whose device was signed out
    assert audit["outcome"] == "denied"
    assert audit["status"] == 401
    assert audit["target"] == f"device:{first['device_id']}"


async def test_reuse_revokes_only_that_device(api: Any) -> None:
    phone = await mobile_login(api, device="phone")
    tablet = await mobile_login(api, device="tablet")
    status, _ = await refresh(api, phone["refresh_token"])
    assert status == 200
    status, _ = await refresh(api, phone["refresh_token"])
    assert status == 401
    status, _ = await api.get(HEALTH, headers=bearer(tablet["access_token"]))
    assert status == 200
    status, _ = await refresh(api, tablet["refresh_token"])
    assert status == 200


async def test_concurrent_refreshes_with_one_token_let_exactly_one_win(
    api: Any, db: Any
) -> None:
    for _ in range(5):
        login = await mobile_login(api)
        results = await asyncio.gather(*(refresh(api, login["refresh_token"]) for _ in range(4)))
        statuses = sorted(status for status, _ in results)
        assert statuses == [200, 401, 401, 401], results
        # Only one new pair was ever issued for this device.
        issued = await db.fetchval(
            "SELECT count(*) FROM mobile_tokens WHERE device_id = $1 AND kind = 'refresh'",
            login["device_id"],
        )
        assert issued == 2
        # The losers presented a token that was already exchanged: that is reuse,
        # so the winner's pair is revoked along with the rest of the family.
        winner = next(body["data"] for status, body in results if status == 200)
        status, _ = await api.get(HEALTH, headers=bearer(winner["access_token"]))
        assert status == 401


async def test_expired_tokens_are_refused(api: Any, db: Any) -> None:
    data = await mobile_login(api)
    await db.execute(
        "UPDATE mobile_tokens SET expires_at = now() - interval '1 second' "
        "WHERE device_id = $1 AND kind = 'access'", data["device_id"],
    )
    status, body = await api.get(HEALTH, headers=bearer(data["access_token"]))
    assert status == 401
    assert "expired" in body["error"]
    # An expired access token is what refresh is for.
    status, body = await refresh(api, data["refresh_token"])
    assert status == 200
    fresh = body["data"]
    status, _ = await api.get(HEALTH, headers=bearer(fresh["access_token"]))
    assert status == 200

    await db.execute(
        "UPDATE mobile_tokens SET expires_at = now() - interval '1 second' "
        "WHERE token_digest = $1", sha256(fresh["refresh_token"]),
    )
    status, body = await refresh(api, fresh["refresh_token"])
    assert status == 401
    assert body["error"] == "refresh token expired; sign in again"


async def test_bearer_writes_need_no_csrf_token(api: Any) -> None:
    data = await mobile_login(api)
    assert api.csrf is None
    status, body = await api.post(
        "/api/auth/api-keys", {"name": "from the phone"}, headers=bearer(data["access_token"])
    )
    assert status == 201, body


async def test_logout_ends_the_calling_device(api: Any, db: Any) -> None:
    phone = await mobile_login(api, device="phone")
    tablet = await mobile_login(api, device="tablet")
    status, _ = await api.post("/api/mobile/auth/logout")
    assert status == 401
    status, body = await api.post("/api/mobile/auth/logout", headers=bearer(phone["access_token"]))
    assert status == 200, body
    assert body["data"]["id"] == phone["device_id"]
    status, _ = await api.get(DEVICES, headers=bearer(phone["access_token"]))
    assert status == 401
    status, body = await refresh(api, phone["refresh_token"])
    assert status == 401
    assert "signed out" in body["error"]
    # The other device is untouched.
    status, body = await api.get(DEVICES, headers=bearer(tablet["access_token"]))
    assert status == 200
    assert [d["id"] for d in body["data"]] == [tablet["device_id"]]
    assert await db.fetchval(
        "SELECT target FROM audit_logs WHERE action = 'mobile.logout' AND outcome = 'success'"
    ) == f"device:{phone['device_id']}"


async def test_device_list_marks_the_current_device_and_delete_revokes(
    api: Any, db: Any
) -> None:
    phone = await mobile_login(api, device="phone")
    tablet = await mobile_login(api, device="tablet")
    status, body = await api.get(DEVICES, headers=bearer(phone["access_token"]))
    assert status == 200
    devices = {d["device_name"]: d for d in body["data"]}
    assert set(devices) == {"phone", "tablet"}
    assert devices["phone"]["current"] is True
    assert devices["tablet"]["current"] is False
    assert devices["phone"]["ip"] == "127.0.0.1"
    assert devices["phone"]["expires_at"]
    assert "token" not in str(body)

    status, body = await api.delete(
        f"{DEVICES}/{tablet['device_id']}", headers=bearer(phone["access_token"])
    )
    assert status == 200, body
    status, _ = await api.get(DEVICES, headers=bearer(tablet["access_token"]))
    assert status == 401
    status, _ = await refresh(api, tablet["refresh_token"])
    assert status == 401
    status, body = await api.get(DEVICES, headers=bearer(phone["access_token"]))
    assert [d["device_name"] for d in body["data"]] == ["phone"]
    # Deleting again, or a device that never existed: 404.
    for missing in (tablet["device_id"], 999999, 2**63):
        status, body = await api.delete(
            f"{DEVICES}/{missing}", headers=bearer(phone["access_token"])
        )
        assert status == 404, missing
        assert body["error"] == f"device {missing} not found"
    status, body = await api.delete(f"{DEVICES}/abc", headers=bearer(phone["access_token"]))
    assert status == 422


async def test_devices_of_other_users_are_invisible_except_to_admins(
    api: Any, db: Any
) -> None:
    await make_user(db, "ana")
    await make_user(db, "ben")
    ana = await mobile_login(api, "ana", PASSWORD, device="ana-phone")
    ben = await mobile_login(api, "ben", PASSWORD, device="ben-phone")
    admin = await mobile_login(api, device="admin-phone")

    status, body = await api.get(DEVICES, headers=bearer(ben["access_token"]))
    assert [d["device_name"] for d in body["data"]] == ["ben-phone"]
    status, body = await api.get(f"{DEVICES}?all=true", headers=bearer(ben["access_token"]))
    assert status == 403
    status, body = await api.delete(
        f"{DEVICES}/{ana['device_id']}", headers=bearer(ben["access_token"])
    )
    assert status == 404
    assert body["error"] == f"device {ana['device_id']} not found"  # as if there were none
    status, _ = await api.get(DEVICES, headers=bearer(ana["access_token"]))
    assert status == 200

    status, body = await api.get(f"{DEVICES}?all=true", headers=bearer(admin["access_token"]))
    assert status == 200
    owners = {d["device_name"]: d["user"]["username"] for d in body["data"]}
    assert owners == {"ana-phone": "ana", "ben-phone": "ben", "admin-phone": "admin"}
    status, body = await api.get(f"{DEVICES}?all=maybe", headers=bearer(admin["access_token"]))
    assert status == 422
    status, body = await api.delete(
        f"{DEVICES}/{ana['device_id']}", headers=bearer(admin["access_token"])
    )
    assert status == 200
    status, _ = await api.get(DEVICES, headers=bearer(ana["access_token"]))
    assert status == 401
    detail = await db.fetchval(
        "SELECT detail FROM audit_logs WHERE action = 'mobile.devices.delete' AND status = 200"
    )
    assert detail == {"device_name": "ana-phone", "owner": "ana"}


async def test_role_changes_and_removal_of_the_user_apply_on_the_next_request(
    api: Any, db: Any
) -> None:
    uid = await make_user(db, "carol", role="member")
    data = await mobile_login(api, "carol", PASSWORD)
    assert data["user"]["role"] == "member"
    status, body = await api.get(HEALTH, headers=bearer(data["access_token"]))
    assert status == 403
    assert body["error"] == "requires the admin role"
    await db.execute("UPDATE users SET role = 'admin' WHERE id = $1", uid)
    status, _ = await api.get(HEALTH, headers=bearer(data["access_token"]))
    assert status == 200

    await db.execute("UPDATE users SET disabled = true WHERE id = $1", uid)
    status, _ = await api.get(DEVICES, headers=bearer(data["access_token"]))
    assert status == 401
    status, _ = await refresh(api, data["refresh_token"])
    assert status == 401
    await db.execute("UPDATE users SET disabled = false WHERE id = $1", uid)
    status, _ = await api.get(DEVICES, headers=bearer(data["access_token"]))
    assert status == 200

    await db.execute("DELETE FROM users WHERE id = $1", uid)
    status, _ = await api.get(DEVICES, headers=bearer(data["access_token"]))
    assert status == 401
    status, _ = await refresh(api, data["refresh_token"])
    assert status == 401


async def test_login_needs_the_second_factor_once_enabled(api: Any, client: Any, db: Any) -> None:
    uid = await make_user(db, "dora")
    secret = pyotp.random_base32(32)
    sealed = client.app[context.KEYS].seal(secret)
    await db.execute(
        "UPDATE users SET totp_secret_enc = $2, totp_enabled = true WHERE id = $1", uid, sealed
    )
    creds = {"username": "dora", "password": PASSWORD, "device_name": "phone"}
    status, body = await api.post("/api/mobile/auth/login", creds)
    assert status == 401
    assert body["totp_required"] is True
    assert await db.fetchval("SELECT count(*) FROM mobile_devices") == 0
    code = pyotp.TOTP(secret).now()
    status, body = await api.post("/api/mobile/auth/login", {**creds, "totp_code": code})
    assert status == 200, body
    # The same code does not work twice.
    status, body = await api.post("/api/mobile/auth/login", {**creds, "totp_code": code})
    assert status == 401
    assert body["error"] == "invalid two-factor code"


async def test_login_lockout_after_five_failures(api: Any, new_api: Any) -> None:
    for attempt in range(5):
        status, _ = await api.post("/api/mobile/auth/login", {
            "username": "admin", "password": f"wrong password {attempt}", "device_name": "p",
        })
        assert status == 401, attempt
    async with api.client.post("/api/mobile/auth/login", json={
        "username": "admin", "password": ADMIN_PASSWORD, "device_name": "p",
    }) as resp:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) > 0
        assert resp.headers["X-RateLimit-Limit"] == "5"
        assert "too many failed sign-ins" in (await resp.json())["error"]


async def test_login_and_refresh_are_audited_without_secrets(api: Any, db: Any) -> None:
    data = await mobile_login(api, device="audited phone")
    status, body = await refresh(api, data["refresh_token"])
    assert status == 200
    rows = await db.fetch(
        "SELECT action, actor, actor_user_id, principal_kind, target, outcome, detail::text "
        "FROM audit_logs WHERE action LIKE 'mobile.%' ORDER BY id"
    )
    assert [r["action"] for r in rows] == ["mobile.login", "mobile.refresh"]
    for r in rows:
        assert r["actor"] == "admin"
        assert r["actor_user_id"] == data["user"]["id"]
        assert r["principal_kind"] == "device"
        assert r["target"] == f"device:{data['device_id']}"
        assert r["outcome"] == "success"
    everything = str([dict(r) for r in await db.fetch("SELECT * FROM audit_logs")])
    for secret in (data["access_token"], data["refresh_token"],
                   body["data"]["access_token"], body["data"]["refresh_token"], ADMIN_PASSWORD):
        assert secret not in everything


async def test_failures_on_web_and_mobile_sign_in_share_one_lockout(api: Any, db: Any) -> None:
    await make_user(db, "erin")
    wrong = {"username": "erin", "password": "not the password"}
    for _ in range(3):
        status, _ = await api.post("/api/auth/login", wrong)
        assert status == 401
    for _ in range(2):
        status, _ = await api.post("/api/mobile/auth/login", {**wrong, "device_name": "p"})
        assert status == 401
    right = {"username": "erin", "password": PASSWORD}
    status, body = await api.post("/api/mobile/auth/login", {**right, "device_name": "p"})
    assert status == 429, body
    status, body = await api.post("/api/auth/login", right)
    assert status == 429, body
    assert await db.fetchval("SELECT count(*) FROM mobile_devices") == 0


async def test_access_token_is_a_device_principal(api: Any) -> None:
    data = await mobile_login(api, device="phone")
    assert data["user"] == {"id": data["user"]["id"], "username": "admin", "role": "admin",
                            "totp_enabled": False}
    status, body = await api.get("/api/auth/me", headers=bearer(data["access_token"]))
    assert status == 200, body
    assert body["data"]["user"]["username"] == "admin"
    assert body["data"]["principal"]["kind"] == "device"
    assert body["data"]["principal"]["id"] == data["device_id"]
    assert "csrf_token" not in body["data"]


async def test_mobile_logout_and_devices_from_a_browser_session(api: Any) -> None:
    phone = await mobile_login(api, device="phone")
    await api.login()
    status, body = await api.post("/api/mobile/auth/logout")
    assert status == 400
    assert "POST /api/auth/logout" in body["error"]
    status, body = await api.get(DEVICES)
    assert status == 200
    assert [(d["id"], d["current"]) for d in body["data"]] == [(phone["device_id"], False)]
    # A browser write is still CSRF-checked on these routes.
    csrf, api.csrf = api.csrf, None
    status, body = await api.delete(f"{DEVICES}/{phone['device_id']}")
    assert status == 403
    assert "X-CSRF-Token" in body["error"]
    api.csrf = csrf
    status, _ = await api.delete(f"{DEVICES}/{phone['device_id']}")
    assert status == 200
    status, _ = await api.get(DEVICES, headers=bearer(phone["access_token"]))
    assert status == 401


async def test_a_failed_login_is_audited_under_the_name_tried(api: Any, db: Any) -> None:
    phone = await mobile_login(api)
    # The request also carries the admin's valid token; the record must name who tried.
    status, _ = await api.post("/api/mobile/auth/login", {
        "username": "mallory", "password": "guess guess guess", "device_name": "p",
    }, headers=bearer(phone["access_token"]))
    assert status == 401
    row = await db.fetchrow(
        "SELECT actor, actor_user_id, outcome, detail FROM audit_logs "
        "WHERE action = 'mobile.login' ORDER BY id DESC LIMIT 1"
    )
    assert row["actor"] == "mallory"
    assert row["actor_user_id"] is None
    assert row["outcome"] == "denied"
    assert row["detail"] == {"reason": "bad credentials"}


async def test_refresh_ends_the_access_tokens_it_replaces(api: Any, db: Any) -> None:
    """A refresh hands out a new access token; the one it replaces (say, copied off the
    phone) must not keep working until its own expiry."""
    phone = await mobile_login(api, device="phone")
    tablet = await mobile_login(api, device="tablet")
    status, body = await refresh(api, phone["refresh_token"])
    assert status == 200, body
    renewed = body["data"]
    status, body = await api.get(HEALTH, headers=bearer(phone["access_token"]))
    assert status == 401, body
    assert (await api.get(HEALTH, headers=bearer(renewed["access_token"])))[0] == 200
    # Other devices of the same user are untouched.
    assert (await api.get(HEALTH, headers=bearer(tablet["access_token"])))[0] == 200
    live = await db.fetchval(
        "SELECT count(*) FROM mobile_tokens WHERE device_id = $1 AND kind = 'access' "
        "AND expires_at > now()", phone["device_id"],
    )
    assert live == 1
