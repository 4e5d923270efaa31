"""User administration: CRUD, name rules, and the rules that keep an admin around."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import ADMIN_PASSWORD

PASSWORD = "a long enough passphrase"
PUBLIC_FIELDS = {
    "id", "username", "role", "disabled", "totp_enabled", "created_at", "updated_at",
    "password_changed_at", "last_login_at",
}


async def make_user(api: Any, username: str, role: str = "member") -> int:
    status, body = await api.post(
        "/api/users", {"username": username, "password": PASSWORD, "role": role}
    )
    assert status == 201, body
    return int(body["data"]["id"])


async def test_create_get_list_update_delete(api: Any, new_api: Any, db: Any) -> None:
    await api.login()
    status, body = await api.post(
        "/api/users", {"username": "bob.smith-2_x", "password": PASSWORD, "role": "member"}
    )
    assert status == 201, body
    bob = body["data"]
    assert set(bob) == PUBLIC_FIELDS
    assert (bob["username"], bob["role"], bob["disabled"]) == ("bob.smith-2_x", "member", False)
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", bob["id"])
    assert stored.startswith("scrypt$") and PASSWORD not in stored

    status, body = await api.get(f"/api/users/{bob['id']}")
    assert (status, body["data"]) == (200, bob)

    status, body = await api.get("/api/users")
    assert status == 200
    assert [u["username"] for u in body["data"]] == ["admin", "bob.smith-2_x"]
    assert all(set(u) == PUBLIC_FIELDS for u in body["data"])

    status, body = await api.put(f"/api/users/{bob['id']}", {"role": "viewer"})
    assert (status, body["data"]["role"]) == (200, "viewer")

    client = await new_api()
    await client.login("bob.smith-2_x", PASSWORD)

    status, body = await api.delete(f"/api/users/{bob['id']}")
    assert (status, body["data"]["username"]) == (200, "bob.smith-2_x")
    assert (await api.get(f"/api/users/{bob['id']}"))[0] == 404
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", bob["id"]) == 0
    assert (await client.get("/api/auth/me"))[0] == 401


async def test_role_defaults_to_viewer(api: Any) -> None:
    await api.login()
    status, body = await api.post("/api/users", {"username": "quiet", "password": PASSWORD})
    assert (status, body["data"]["role"]) == (201, "viewer")


@pytest.mark.parametrize(("name", "message"), [
    ("", "username: must have at least 1 characters"),
    ("x" * 65, "username: must have at most 64 characters"),
    ("bob smith", "username: must be 1–64 characters, each a letter, a digit, '.', '_' or '-'"),
    ("bøb", "username: must be 1–64 characters, each a letter, a digit, '.', '_' or '-'"),
    ("bob/../x", "username: must be 1–64 characters, each a letter, a digit, '.', '_' or '-'"),
])
async def test_username_rules(api: Any, name: str, message: str) -> None:
    await api.login()
    status, body = await api.post("/api/users", {"username": name, "password": PASSWORD})
    assert (status, body) == (422, {"error": message})


async def test_longest_username_is_accepted(api: Any) -> None:
    await api.login()
    assert (await api.post("/api/users", {"username": "x" * 64, "password": PASSWORD}))[0] == 201


async def test_duplicate_name_is_409_regardless_of_case(api: Any) -> None:
    await api.login()
    await make_user(api, "bob")
    status, body = await api.post("/api/users", {"username": "BOB", "password": PASSWORD})
    assert (status, body) == (409, {"error": "a user named 'BOB' already exists"})
    status, _ = await api.post("/api/users", {"username": "Admin", "password": PASSWORD})
    assert status == 409


@pytest.mark.parametrize(("payload", "status", "fragment"), [
    ({"username": "bob", "password": "short"}, 422, "password: password must have at least 10"),
    ({"username": "bob", "password": "BOB"}, 422, "password: password must have at least 10"),
    ({"username": "bobbobbob1", "password": "bobbobbob1"}, 422, "must not be the username"),
    ({"username": "bob", "password": PASSWORD, "role": "root"}, 422,
     "role: must be one of viewer, member, admin"),
    ({"username": "bob"}, 422, "password: is required"),
])
async def test_create_input_errors(
    api: Any, payload: dict[str, Any], status: int, fragment: str
) -> None:
    await api.login()
    got, body = await api.post("/api/users", payload)
    assert got == status
    assert fragment in body["error"]


async def test_unknown_ids_are_404(api: Any) -> None:
    await api.login()
    assert (await api.get("/api/users/999")) == (404, {"error": "user 999 not found"})
    assert (await api.put("/api/users/999", {"role": "viewer"}))[0] == 404
    assert (await api.delete("/api/users/999"))[0] == 404
    assert (await api.get("/api/users/" + "9" * 31))[0] == 422
    assert (await api.get("/api/users/12345678901234567890"))[0] == 404
    assert (await api.get("/api/users/bob"))[0] == 422
    # An integer that cannot name a row is simply not found, whatever its sign.
    assert (await api.get("/api/users/0")) == (404, {"error": "user 0 not found"})
    assert (await api.get("/api/users/-1")) == (404, {"error": "user -1 not found"})
    assert (await api.delete("/api/users/-7"))[0] == 404
    assert (await api.get("/api/users/1.5"))[0] == 422
    assert (await api.get("/api/users/%EF%BC%91"))[0] == 422  # fullwidth 1


async def test_update_input_errors(api: Any) -> None:
    await api.login()
    uid = await make_user(api, "bob")
    status, body = await api.put(f"/api/users/{uid}", {})
    assert (status, body["error"]) == (
        422, "nothing to change: give role, disabled, password or disable_totp"
    )
    assert (await api.put(f"/api/users/{uid}", {"disabled": "yes"}))[0] == 422
    assert (await api.put(f"/api/users/{uid}", {"role": "owner"}))[0] == 422
    assert (await api.put(f"/api/users/{uid}", {"password": "short"}))[0] == 422


async def test_admin_cannot_lock_themself_out(api: Any, db: Any) -> None:
    await api.login()
    status, body = await api.delete("/api/users/1")
    assert (status, body) == (409, {"error": "you cannot delete your own account"})
    status, body = await api.put("/api/users/1", {"role": "member"})
    assert (status, body) == (409, {"error": "you cannot change your own role; another admin "
                                             "must do it"})
    status, body = await api.put("/api/users/1", {"disabled": True})
    assert (status, body) == (409, {"error": "you cannot disable your own account"})
    status, body = await api.put("/api/users/1", {"password": "a brand new passphrase"})
    assert status == 400
    assert "PUT /api/auth/password" in body["error"]
    row = await db.fetchrow("SELECT role, disabled FROM users WHERE id = 1")
    assert (row["role"], row["disabled"]) == ("admin", False)
    # Setting one's own role to what it already is changes nothing and is allowed.
    assert (await api.put("/api/users/1", {"role": "admin"}))[0] == 200


async def test_one_admin_may_demote_another(api: Any, new_api: Any) -> None:
    await api.login()
    other = await make_user(api, "second", role="admin")
    status, body = await api.put(f"/api/users/{other}", {"role": "member"})
    assert (status, body["data"]["role"]) == (200, "member")


@pytest.mark.parametrize("attempt", range(3))
async def test_concurrent_demotions_leave_an_admin(
    api: Any, new_api: Any, db: Any, attempt: int
) -> None:
    """Two admins demote each other at the same moment: the lock lets one win; the
    other is refused (as the last admin, or because it is no longer an admin)."""
    await api.login()
    other_id = await make_user(api, "second", role="admin")
    other = await new_api()
    await other.login("second", PASSWORD)
    first, second = await asyncio.gather(
        api.put(f"/api/users/{other_id}", {"role": "member"}),
        other.put("/api/users/1", {"role": "member"}),
    )
    statuses = sorted([first[0], second[0]])
    assert statuses in ([200, 403], [200, 409]), (first, second)
    if 409 in statuses:
        refused = first if first[0] == 409 else second
        assert "is the last active admin" in refused[1]["error"]
    admins = await db.fetchval("SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled")
    assert admins == 1


async def test_admin_password_reset_revokes_the_users_sessions(api: Any, new_api: Any) -> None:
    await api.login()
    uid = await make_user(api, "bob")
    bob = await new_api()
    await bob.login("bob", PASSWORD)
    status, body = await api.put(f"/api/users/{uid}", {"password": "reset by the admin"})
    assert status == 200, body
    assert (await bob.get("/api/auth/me"))[0] == 401
    again = await new_api()
    assert (await again.post("/api/auth/login",
                             {"username": "bob", "password": PASSWORD}))[0] == 401
    await again.login("bob", "reset by the admin")


async def test_admin_can_turn_off_a_users_2fa(api: Any, new_api: Any, db: Any) -> None:
    await api.login()
    uid = await make_user(api, "bob")
    await db.execute(
        "UPDATE users SET totp_enabled = true, totp_secret_enc = '\\x00' WHERE id = $1", uid
    )
    await db.execute(
        "INSERT INTO recovery_codes (user_id, code_digest) VALUES ($1, '\\x01')", uid
    )
    bob = await new_api()
    status, body = await bob.post("/api/auth/login", {"username": "bob", "password": PASSWORD})
    assert body.get("totp_required") is True
    status, body = await api.put(f"/api/users/{uid}", {"disable_totp": True})
    assert (status, body["data"]["totp_enabled"]) == (200, False)
    assert await db.fetchval("SELECT count(*) FROM recovery_codes WHERE user_id = $1", uid) == 0
    await bob.login("bob", PASSWORD)


async def test_users_routes_need_admin(api: Any, new_api: Any) -> None:
    await api.login()
    uid = await make_user(api, "bob", role="member")
    bob = await new_api()
    await bob.login("bob", PASSWORD)
    assert (await bob.get("/api/users"))[0] == 403
    assert (await bob.get(f"/api/users/{uid}"))[0] == 403
    assert (await bob.post("/api/users", {"username": "eve", "password": PASSWORD}))[0] == 403
    assert (await bob.put(f"/api/users/{uid}", {"role": "admin"}))[0] == 403
    assert (await bob.delete("/api/users/1"))[0] == 403
    anonymous = await new_api()
    assert (await anonymous.get("/api/users"))[0] == 401
    assert (await anonymous.post("/api/users", {"username": "eve", "password": PASSWORD}))[0] == 401


async def test_read_only_key_can_list_but_not_create(api: Any, new_api: Any) -> None:
    await api.login()
    _, body = await api.post("/api/auth/api-keys", {"name": "reader", "scope": "read"})
    robot = await new_api()
    robot.headers = {"X-API-Key": body["data"]["key"]}
    assert (await robot.get("/api/users"))[0] == 200
    status, body = await robot.post("/api/users", {"username": "eve", "password": PASSWORD})
    assert status == 403
    assert body["error"].startswith("API keys cannot create users")


async def test_an_api_key_cannot_create_users_or_change_credentials(
    api: Any, new_api: Any, db: Any
) -> None:
    """Credentials and privileges change only at a person's hand: a leaked full-scope
    admin key must not be able to mint an admin, reset a password, promote, or turn
    off someone's 2FA."""
    await api.login()
    uid = await make_user(api, "bob", role="viewer")
    await db.execute(
        "UPDATE users SET totp_enabled = true, totp_secret_enc = '\\x00' WHERE id = $1", uid
    )
    _, body = await api.post("/api/auth/api-keys", {"name": "automation", "scope": "full"})
    robot = await new_api()
    robot.headers = {"X-API-Key": body["data"]["key"]}
    assert (await robot.get("/api/users"))[0] == 200  # reading stays possible
    assert (await robot.get(f"/api/users/{uid}"))[0] == 200
    attempts = [
        ("POST", "/api/users", {"username": "eve", "password": PASSWORD, "role": "admin"}),
        ("PUT", f"/api/users/{uid}", {"role": "admin"}),
        ("PUT", f"/api/users/{uid}", {"password": "chosen by the key holder"}),
        ("PUT", f"/api/users/{uid}", {"disable_totp": True}),
        ("PUT", f"/api/users/{uid}", {"disabled": True}),
        ("DELETE", f"/api/users/{uid}", None),
    ]
    for method, path, payload in attempts:
        status, body = await robot.call(method, path, payload)
        assert status == 403, (method, path, body)
        assert "API key" in body["error"]
    row = await db.fetchrow("SELECT role, disabled, totp_enabled FROM users WHERE id = $1", uid)
    assert (row["role"], row["disabled"], row["totp_enabled"]) == ("viewer", False, True)
    assert await db.fetchval("SELECT count(*) FROM users WHERE username = 'eve'") == 0


async def test_an_admin_on_a_phone_may_manage_users(api: Any) -> None:
    status, body = await api.post("/api/mobile/auth/login", {
        "username": "admin", "password": ADMIN_PASSWORD, "device_name": "admin's phone",
    })
    assert status == 200, body
    api.headers = {"Authorization": f"Bearer {body['data']['access_token']}"}
    uid = await make_user(api, "bob")
    assert (await api.put(f"/api/users/{uid}", {"role": "viewer"}))[0] == 200


async def test_an_admin_cannot_turn_off_their_own_2fa_without_the_password(
    api: Any, db: Any
) -> None:
    await api.login()
    await db.execute("UPDATE users SET totp_enabled = true, totp_secret_enc = '\\x00' "
                     "WHERE id = 1")
    status, body = await api.put("/api/users/1", {"disable_totp": True})
    assert status == 400
    assert "POST /api/auth/2fa/disable" in body["error"]
    assert await db.fetchval("SELECT totp_enabled FROM users WHERE id = 1") is True
