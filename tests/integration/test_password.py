"""Changing one's own password: policy, re-authentication through the sign-in
throttle, and revocation of every other credential of that user."""

from __future__ import annotations

from typing import Any

import pytest

PASSWORD = "bob's first passphrase"
NEW_PASSWORD = "bob's second passphrase"


async def make_user(api: Any, username: str, role: str = "member") -> int:
    status, body = await api.post(
        "/api/users", {"username": username, "password": PASSWORD, "role": role}
    )
    assert status == 201, body
    return int(body["data"]["id"])


async def signed_in(new_api: Any, username: str, password: str = PASSWORD) -> Any:
    client = await new_api()
    await client.login(username, password)
    return client


async def test_change_revokes_everything_but_the_current_session(
    api: Any, new_api: Any, db: Any
) -> None:
    await api.login()
    await make_user(api, "bob")
    await make_user(api, "carol")
    bob = await signed_in(new_api, "bob")
    bob_elsewhere = await signed_in(new_api, "bob")
    carol = await signed_in(new_api, "carol")

    status, body = await bob.post("/api/auth/api-keys", {"name": "backup", "scope": "full"})
    assert status == 201, body
    key = body["data"]["key"]
    phone = await new_api()
    status, body = await phone.post("/api/mobile/auth/login", {
        "username": "bob", "password": PASSWORD, "device_name": "bob's phone",
    })
    assert status == 200, body
    access, refresh = body["data"]["access_token"], body["data"]["refresh_token"]
    bearer = {"Authorization": f"Bearer {access}"}
    assert (await phone.get("/api/auth/me", headers=bearer))[0] == 200
    assert (await phone.get("/api/auth/me", headers={"X-API-Key": key}))[0] == 200

    status, body = await bob.put("/api/auth/password",
                                 {"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert status == 200, body
    assert body["data"]["revoked"] == {"sessions": 1, "mobile_devices": 1, "api_keys": 1}

    assert (await bob.get("/api/auth/me"))[0] == 200  # the session that asked survives
    assert (await bob_elsewhere.get("/api/auth/me"))[0] == 401
    assert (await phone.get("/api/auth/me", headers=bearer))[0] == 401
    assert (await phone.get("/api/auth/me", headers={"X-API-Key": key}))[0] == 401
    status, _ = await phone.post("/api/mobile/auth/refresh", {"refresh_token": refresh})
    assert status == 401
    assert (await carol.get("/api/auth/me"))[0] == 200  # other users are untouched

    fresh = await new_api()
    status, _ = await fresh.post("/api/auth/login", {"username": "bob", "password": PASSWORD})
    assert status == 401
    await fresh.login("bob", NEW_PASSWORD)
    changed = await db.fetchval(
        "SELECT password_changed_at > created_at FROM users WHERE username = 'bob'"
    )
    assert changed is True


async def test_change_from_a_mobile_device_keeps_that_device(api: Any, new_api: Any) -> None:
    await api.login()
    await make_user(api, "bob")
    browser = await signed_in(new_api, "bob")
    phone = await new_api()
    _, body = await phone.post("/api/mobile/auth/login", {
        "username": "bob", "password": PASSWORD, "device_name": "phone",
    })
    bearer = {"Authorization": f"Bearer {body['data']['access_token']}"}
    status, body = await phone.put(
        "/api/auth/password",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=bearer,
    )
    assert status == 200, body
    assert body["data"]["revoked"] == {"sessions": 1, "mobile_devices": 0, "api_keys": 0}
    assert (await phone.get("/api/auth/me", headers=bearer))[0] == 200
    assert (await browser.get("/api/auth/me"))[0] == 401


async def test_an_api_key_cannot_change_the_password(api: Any, new_api: Any) -> None:
    await api.login()
    _, body = await api.post("/api/auth/api-keys", {"name": "ci", "scope": "full"})
    robot = await new_api()
    status, body = await robot.put(
        "/api/auth/password",
        {"current_password": "correct horse battery staple", "new_password": NEW_PASSWORD},
        headers={"X-API-Key": body["data"]["key"]},
    )
    assert status == 403
    assert "API keys" in body["error"]


async def test_anonymous_cannot_change_a_password(api: Any) -> None:
    status, _ = await api.put("/api/auth/password",
                              {"current_password": "whatever it is", "new_password": NEW_PASSWORD})
    assert status == 401


@pytest.mark.parametrize(("new", "message"), [
    ("short", "new_password: password must have at least 10 characters"),
    ("admin", "new_password: password must have at least 10 characters"),
    ("aaaaaaaaaaaaaaaa", "new_password: password must use more than two distinct characters"),
    ("correct horse battery staple", "new_password: must differ from the current password"),
])
async def test_policy(api: Any, db: Any, new: str, message: str) -> None:
    await api.login()
    before = await db.fetchval("SELECT password_hash FROM users WHERE id = 1")
    status, body = await api.put("/api/auth/password",
                                 {"current_password": "correct horse battery staple",
                                  "new_password": new})
    assert (status, body) == (422, {"error": message})
    assert await db.fetchval("SELECT password_hash FROM users WHERE id = 1") == before


async def test_password_equal_to_username_is_refused(api: Any, new_api: Any) -> None:
    await api.login()
    await make_user(api, "longusername")
    user = await signed_in(new_api, "longusername")
    status, body = await user.put("/api/auth/password",
                                  {"current_password": PASSWORD, "new_password": "LongUserName"})
    assert (status, body["error"]) == (422, "new_password: password must not be the username")


async def test_wrong_current_password_counts_toward_the_lockout(
    api: Any, new_api: Any, db: Any
) -> None:
    await api.login()
    await make_user(api, "bob")
    bob = await signed_in(new_api, "bob")
    before = await db.fetchval("SELECT password_hash FROM users WHERE username = 'bob'")
    wrong = {"current_password": "not my password", "new_password": NEW_PASSWORD}
    for _ in range(5):
        status, body = await bob.put("/api/auth/password", wrong)
        assert (status, body) == (403, {"error": "the password is wrong"})
    status, body = await bob.put(
        "/api/auth/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert status == 429
    assert "try again in 300 seconds" in body["error"]
    # The same lock guards sign-in for that account, from any client.
    other = await new_api()
    status, _ = await other.post("/api/auth/login", {"username": "bob", "password": PASSWORD})
    assert status == 429
    assert await db.fetchval("SELECT password_hash FROM users WHERE username = 'bob'") == before


async def test_rate_limit_headers_on_password_change(api: Any, client: Any) -> None:
    data = await api.login()
    body = {"current_password": "not my password", "new_password": NEW_PASSWORD}
    async with client.put("/api/auth/password", json=body,
                          headers={"X-CSRF-Token": data["csrf_token"]}) as resp:
        assert resp.status == 403
        assert resp.headers["X-RateLimit-Limit"] == "5"
        assert resp.headers["X-RateLimit-Remaining"] == "4"
