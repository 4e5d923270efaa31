"""Sessions: listing and revoking one's own, administrators listing and revoking
anyone's, and changes to a user taking effect on that user's very next request."""

from __future__ import annotations

from typing import Any

PASSWORD = "a long enough passphrase"


async def make_user(api: Any, username: str, role: str = "member") -> int:
    status, body = await api.post(
        "/api/users", {"username": username, "password": PASSWORD, "role": role}
    )
    assert status == 201, body
    return int(body["data"]["id"])


async def signed_in(new_api: Any, username: str) -> Any:
    client = await new_api()
    await client.login(username, PASSWORD)
    return client


async def test_list_own_sessions_marks_the_current_one(api: Any, new_api: Any) -> None:
    await api.login()
    other = await new_api()
    await other.login()
    status, body = await api.get("/api/auth/sessions")
    assert status == 200
    sessions = body["data"]
    assert len(sessions) == 2
    assert [s["current"] for s in sessions].count(True) == 1
    mine = next(s for s in sessions if s["current"])
    assert mine["id"] == (await api.get("/api/auth/me"))[1]["data"]["session"]["id"]
    assert {"ip", "user_agent", "created_at", "last_seen_at", "expires_at"} <= set(mine)
    assert "token_digest" not in mine and "csrf_token" not in mine
    # The other client sees the same two, with the other one marked.
    _, theirs = await other.get("/api/auth/sessions")
    assert next(s for s in theirs["data"] if s["current"])["id"] != mine["id"]


async def test_revoke_own_other_session(api: Any, new_api: Any) -> None:
    await api.login()
    other = await new_api()
    await other.login()
    _, body = await other.get("/api/auth/me")
    other_id = body["data"]["session"]["id"]
    status, body = await api.delete(f"/api/auth/sessions/{other_id}")
    assert status == 200, body
    assert body["data"]["id"] == other_id and body["data"]["revoked"] is True
    assert (await other.get("/api/auth/me"))[0] == 401
    assert (await api.get("/api/auth/me"))[0] == 200
    # Gone from the list, and a second revocation finds nothing.
    _, body = await api.get("/api/auth/sessions")
    assert [s["current"] for s in body["data"]] == [True]
    assert (await api.delete(f"/api/auth/sessions/{other_id}"))[0] == 404


async def test_revoking_the_current_session_signs_out(api: Any) -> None:
    data = await api.login()
    _, body = await api.get("/api/auth/me")
    status, body = await api.delete(f"/api/auth/sessions/{body['data']['session']['id']}")
    assert status == 200
    assert body["data"]["current"] is True
    assert (await api.get("/api/auth/me"))[0] == 401
    csrf = {"X-CSRF-Token": data["csrf_token"]}
    assert (await api.post("/api/auth/logout", headers=csrf))[0] == 401


async def test_cannot_revoke_another_users_session_as_own(api: Any, new_api: Any) -> None:
    await api.login()
    await make_user(api, "bob")
    bob = await signed_in(new_api, "bob")
    _, body = await api.get("/api/auth/me")
    admin_session = body["data"]["session"]["id"]
    status, body = await bob.delete(f"/api/auth/sessions/{admin_session}")
    assert status == 404
    assert "not found among your active sessions" in body["error"]
    assert (await api.get("/api/auth/me"))[0] == 200


async def test_sign_out_everywhere_else(api: Any, new_api: Any) -> None:
    await api.login()
    others = [await new_api() for _ in range(3)]
    for o in others:
        await o.login()
    status, body = await api.delete("/api/auth/sessions")
    assert (status, body) == (200, {"data": {"revoked": 3}})
    for o in others:
        assert (await o.get("/api/auth/me"))[0] == 401
    assert (await api.get("/api/auth/me"))[0] == 200


async def test_session_path_ids_are_checked(api: Any) -> None:
    await api.login()
    status, body = await api.delete("/api/auth/sessions/abc")
    assert status == 422
    assert body["error"].startswith("path parameter id: must be a positive integer")
    assert (await api.delete("/api/auth/sessions/²"))[0] == 422
    assert (await api.delete("/api/sessions/99999999999999999999999"))[0] == 404
    assert (await api.delete("/api/sessions/424242"))[0] == 404


async def test_admin_lists_and_revokes_any_session(api: Any, new_api: Any) -> None:
    await api.login()
    bob_id = await make_user(api, "bob")
    await make_user(api, "carol")
    bob = await signed_in(new_api, "bob")
    await signed_in(new_api, "carol")

    status, body = await api.get("/api/sessions")
    assert status == 200
    assert body["pagination"] == {"limit": 100, "offset": 0, "total": 3}
    assert {s["username"] for s in body["data"]} == {"admin", "bob", "carol"}

    _, body = await api.get(f"/api/sessions?user_id={bob_id}")
    assert [s["username"] for s in body["data"]] == ["bob"]
    bob_session = body["data"][0]["id"]

    _, body = await api.get("/api/sessions?limit=2&offset=2")
    assert len(body["data"]) == 1 and body["pagination"]["total"] == 3

    status, body = await api.delete(f"/api/sessions/{bob_session}")
    assert status == 200, body
    assert body["data"]["user_id"] == bob_id
    assert (await bob.get("/api/auth/me"))[0] == 401
    assert (await api.get(f"/api/sessions?user_id={bob_id}"))[1]["pagination"]["total"] == 0


async def test_admin_session_routes_need_admin(api: Any, new_api: Any) -> None:
    await api.login()
    await make_user(api, "bob", role="member")
    bob = await signed_in(new_api, "bob")
    assert (await bob.get("/api/sessions"))[0] == 403
    assert (await bob.delete("/api/sessions/1"))[0] == 403
    anonymous = await new_api()
    assert (await anonymous.get("/api/sessions"))[0] == 401
    assert (await anonymous.get("/api/auth/sessions"))[0] == 401


async def test_bad_admin_list_query_is_422(api: Any) -> None:
    await api.login()
    for query in ("user_id=x", "user_id=0", "limit=0", "limit=501", "offset=-1"):
        status, body = await api.get(f"/api/sessions?{query}")
        assert status == 422, query
        assert query.split("=")[0] in body["error"]


# -- changes take effect on the next request ------------------------------------


async def test_deleted_user_is_refused_on_the_next_request(api: Any, new_api: Any) -> None:
    await api.login()
    bob_id = await make_user(api, "bob")
    bob = await signed_in(new_api, "bob")
    assert (await bob.get("/api/auth/me"))[0] == 200
    assert (await api.delete(f"/api/users/{bob_id}"))[0] == 200
    assert (await bob.get("/api/auth/me"))[0] == 401


async def test_role_change_applies_on_the_next_request(api: Any, new_api: Any) -> None:
    await api.login()
    bob_id = await make_user(api, "bob", role="viewer")
    bob = await signed_in(new_api, "bob")
    assert (await bob.get("/api/users"))[0] == 403

    assert (await api.put(f"/api/users/{bob_id}", {"role": "admin"}))[0] == 200
    status, body = await bob.get("/api/users")
    assert status == 200 and len(body["data"]) == 2
    assert (await bob.get("/api/auth/me"))[1]["data"]["user"]["role"] == "admin"

    assert (await api.put(f"/api/users/{bob_id}", {"role": "viewer"}))[0] == 200
    assert (await bob.get("/api/users"))[0] == 403


async def test_disabling_revokes_for_good(api: Any, new_api: Any, db: Any) -> None:
    await api.login()
    bob_id = await make_user(api, "bob")
    bob = await signed_in(new_api, "bob")
    status, body = await api.put(f"/api/users/{bob_id}", {"disabled": True})
    assert status == 200 and body["data"]["disabled"] is True
    assert (await bob.get("/api/auth/me"))[0] == 401
    # Enabling again does not bring the old session back.
    assert (await api.put(f"/api/users/{bob_id}", {"disabled": False}))[0] == 200
    assert (await bob.get("/api/auth/me"))[0] == 401
    revoked = await db.fetchval(
        "SELECT bool_and(revoked_at IS NOT NULL) FROM sessions WHERE user_id = $1", bob_id
    )
    assert revoked is True
    await bob.login("bob", PASSWORD)
