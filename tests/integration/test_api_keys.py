"""API keys against the real database: shown once, stored as a digest, scoped, expiring,
revocable, and always acting with their owner's current standing."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest
from aiohttp import web

from beeyard.server.app import create_app
from beeyard.server.auth.passwords import hash_sync
from beeyard.server.auth.principal import Access
from beeyard.server.http import routing
from beeyard.server.http.envelope import ok
from conftest import ADMIN_PASSWORD, Api

PASSWORD = "members only, please"
KEYS = "/api/auth/api-keys"
HEALTH = "/api/admin/health/detailed"  # an admin GET route
PROBE = "/api/test/probe"  # member-level GET and POST routes added for these tests only


def sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def x_api_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def make_user(db: Any, username: str, role: str = "member", password: str = PASSWORD) -> int:
    """Users straight into the table: the users API belongs to another module."""
    return int(await db.fetchval(
        "INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3) RETURNING id",
        username, hash_sync(password), role,
    ))


async def sign_in(api: Api, username: str = "admin", password: str = ADMIN_PASSWORD) -> Api:
    """Sign ``api`` in as a person (a mobile device: a bearer session) to manage keys."""
    status, body = await api.post("/api/mobile/auth/login", {
        "username": username, "password": password, "device_name": "test",
    })
    assert status == 200, body
    api.headers = bearer(body["data"]["access_token"])
    return api


async def create_key(api: Api, name: str = "script", **fields: Any) -> dict[str, Any]:
    status, body = await api.post(KEYS, {"name": name, **fields})
    assert status == 201, body
    return body["data"]  # type: ignore[no-any-return]


async def _probe(request: web.Request) -> web.Response:
    return ok({"method": request.method})


PROBE_ROUTES = [
    routing.route("GET", PROBE, Access.MEMBER, "test.probe.read")(_probe),
    routing.route("POST", PROBE, Access.MEMBER, "test.probe.write")(_probe),
]


@pytest.fixture
async def probe_api(aiohttp_client: Any, settings: Any) -> Api:
    """The real application plus a member-level read and write route, so that the
    scope and role rules are exercised through the real middleware."""
    app = create_app(settings)
    routing.install(app, PROBE_ROUTES)
    return Api(await aiohttp_client(app))


async def test_key_is_shown_once_and_stored_only_as_a_digest(api: Api, db: Any) -> None:
    await sign_in(api)
    before = dt.datetime.now(dt.UTC)
    data = await create_key(api, "backup script")
    key = data["key"]
    assert key.startswith("beeyard_")
    assert len(key) > 40
    assert data["prefix"] == key[len("beeyard_"):][:8]
    assert data["scope"] == "full"  # the default
    assert data["expires_at"] is None
    assert data["last_used_at"] is None
    assert dt.datetime.fromisoformat(data["created_at"]) >= before - dt.timedelta(seconds=5)

    row = await db.fetchrow("SELECT * FROM api_keys WHERE id = $1", data["id"])
    assert bytes(row["key_digest"]) == sha256(key)
    assert row["key_prefix"] == data["prefix"]
    assert row["name"] == "backup script"
    assert key not in str(dict(row))

    status, body = await api.get(KEYS)
    assert status == 200
    assert body["data"] == [{
        "id": data["id"], "name": "backup script", "prefix": data["prefix"], "scope": "full",
        "created_at": data["created_at"], "expires_at": None, "last_used_at": None,
        "expired": False,
    }]
    assert key not in str(body)

    audit = await db.fetchrow(
        "SELECT target, outcome, detail FROM audit_logs WHERE action = 'api_keys.create'"
    )
    assert audit["target"] == f"api_key:{data['id']}"
    assert audit["outcome"] == "success"
    assert audit["detail"]["prefix"] == data["prefix"]
    assert key not in str(await db.fetch("SELECT * FROM audit_logs"))


async def test_key_works_as_x_api_key_and_as_bearer(api: Api, new_api: Any, db: Any) -> None:
    await sign_in(api)
    key = (await create_key(api))["key"]
    script = await new_api()
    status, body = await script.get(HEALTH, headers=x_api_key(key))
    assert status == 200, body
    status, body = await script.get(HEALTH, headers=bearer(key))
    assert status == 200, body
    status, body = await script.get(HEALTH)
    assert status == 401
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), "beeyard_", "nonsense"):
        status, body = await script.get(HEALTH, headers=x_api_key(wrong))
        assert status == 401, wrong
        status, body = await script.get(HEALTH, headers=bearer(wrong))
        assert status == 401, wrong
    # Use is recorded, so an operator can tell a live key from a forgotten one.
    status, body = await api.get(KEYS)
    assert body["data"][0]["last_used_at"] is not None


async def test_read_only_key_may_read_but_not_write(probe_api: Api, new_api: Any) -> None:
    await sign_in(probe_api)
    read = await create_key(probe_api, "dashboard", scope="read")
    full = await create_key(probe_api, "deployer", scope="full")
    assert read["scope"] == "read"
    script = Api(probe_api.client)  # no session headers: only the key
    status, body = await script.get(PROBE, headers=x_api_key(read["key"]))
    assert status == 200, body
    status, body = await script.get(HEALTH, headers=bearer(read["key"]))
    assert status == 200, body
    status, body = await script.post(PROBE, {}, headers=x_api_key(read["key"]))
    assert status == 403
    assert body["error"] == "this API key is read-only"
    status, body = await script.post(PROBE, {}, headers=bearer(read["key"]))
    assert status == 403
    # A full key writes, and needs no CSRF token to do so.
    status, body = await script.post(PROBE, {}, headers=x_api_key(full["key"]))
    assert status == 200, body
    assert body["data"] == {"method": "POST"}


async def test_keys_cannot_manage_the_account(api: Api) -> None:
    await sign_in(api)
    key = (await create_key(api))["key"]
    other = await create_key(api, "other")
    script = Api(api.client)
    attempts = [
        ("GET", KEYS, None), ("POST", KEYS, {"name": "minted by a key"}),
        ("DELETE", f"{KEYS}/{other['id']}", None),
        ("GET", "/api/mobile/auth/devices", None), ("POST", "/api/mobile/auth/logout", None),
    ]
    for method, path, payload in attempts:
        for headers in (x_api_key(key), bearer(key)):
            status, body = await script.call(method, path, payload, headers=headers)
            assert status == 403, (method, path)
            assert body["error"] == (
                "API keys cannot manage accounts; sign in as the user instead"
            )
    status, body = await api.get(KEYS)
    assert sorted(k["name"] for k in body["data"]) == ["other", "script"]


async def test_expiry(api: Api, db: Any) -> None:
    await sign_in(api)
    soon = await create_key(api, "one day", expires_in_days=1)
    expires = dt.datetime.fromisoformat(soon["expires_at"])
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert abs((expires - expected).total_seconds()) < 60
    year = dt.datetime.now(dt.UTC).year + 2
    at = await create_key(api, "fixed", expires_at=f"{year}-01-02T05:04:05+02:00")
    assert at["expires_at"] == f"{year}-01-02T03:04:05Z"
    naive = await create_key(api, "naive", expires_at=f"{year}-01-02T03:04:05")
    assert naive["expires_at"] == f"{year}-01-02T03:04:05Z"  # no offset: UTC
    script = Api(api.client)
    status, _ = await script.get(HEALTH, headers=x_api_key(soon["key"]))
    assert status == 200

    await db.execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", soon["id"]
    )
    status, body = await script.get(HEALTH, headers=x_api_key(soon["key"]))
    assert status == 401
    assert "expired" in body["error"]
    status, body = await api.get(KEYS)
    expired = {k["name"]: k["expired"] for k in body["data"]}
    assert expired == {"one day": True, "fixed": False, "naive": False}


@pytest.mark.parametrize(("fields", "message"), [
    ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at: must be in the future"),
    ({"expires_at": "next tuesday"}, "expires_at: must be an ISO 8601 time"),
    ({"expires_at": "2030-01-01T00:00:00Z", "expires_in_days": 5},
     "give expires_at or expires_in_days, not both"),
    ({"expires_at": "9999-12-31T23:59:59-12:00"}, "expires_at: must be at most 3650 days"),
    ({"expires_in_days": 0}, "expires_in_days: must be at least 1"),
    ({"expires_in_days": 100000}, "expires_in_days: must be at most 3650"),
    ({"expires_in_days": "7"}, "expires_in_days: must be an integer"),
    ({"scope": "admin"}, "scope: must be one of read, full"),
    ({"name": "   "}, "name: must not be blank"),
    ({"name": ""}, "name: must have at least 1 characters"),
    ({"name": "x" * 101}, "name: must have at most 100 characters"),
    ({"name": None}, "name: must not be null"),
])
async def test_create_rejects_bad_input(
    api: Api, db: Any, fields: dict[str, Any], message: str
) -> None:
    await sign_in(api)
    status, body = await api.post(KEYS, {"name": "k", **fields})
    assert status == 422, body
    assert body["error"].startswith(message)
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_duplicate_names_conflict_until_revoked(api: Api) -> None:
    await sign_in(api)
    first = await create_key(api, "ci")
    status, body = await api.post(KEYS, {"name": "CI"})
    assert status == 409
    assert body["error"] == "you already have an API key named 'CI'"
    status, _ = await api.delete(f"{KEYS}/{first['id']}")
    assert status == 200
    await create_key(api, "ci")


async def test_revoke_takes_effect_at_once(api: Api, db: Any) -> None:
    await sign_in(api)
    data = await create_key(api)
    script = Api(api.client)
    status, _ = await script.get(HEALTH, headers=x_api_key(data["key"]))
    assert status == 200
    status, body = await api.delete(f"{KEYS}/{data['id']}")
    assert status == 200, body
    assert body["data"]["id"] == data["id"]
    assert body["data"]["revoked_at"]
    for headers in (x_api_key(data["key"]), bearer(data["key"])):
        status, body = await script.get(HEALTH, headers=headers)
        assert status == 401
        assert body["error"] == "invalid, expired or revoked API key"
    # Kept as revoked (the audit trail names it), but no longer listed.
    assert await db.fetchval("SELECT revoked_at FROM api_keys WHERE id = $1", data["id"])
    status, body = await api.get(KEYS)
    assert body["data"] == []
    status, body = await api.delete(f"{KEYS}/{data['id']}")
    assert status == 404
    assert body["error"] == f"API key {data['id']} not found"
    for bad, expected in (("abc", 422), ("²", 422), ("-1", 404), ("0", 404), (str(2**63), 404)):
        status, body = await api.delete(f"{KEYS}/{bad}")
        assert status == expected, (bad, body)
    assert await db.fetchval(
        "SELECT target FROM audit_logs WHERE action = 'api_keys.delete' AND status = 200"
    ) == f"api_key:{data['id']}"


async def test_other_users_keys_are_invisible_except_to_admins(
    api: Api, new_api: Any, db: Any
) -> None:
    await make_user(db, "ana")
    await make_user(db, "ben")
    ana = await sign_in(await new_api(), "ana", PASSWORD)
    ben = await sign_in(await new_api(), "ben", PASSWORD)
    admin = await sign_in(api)
    anas = await create_key(ana, "ana's key")
    await create_key(ben, "ben's key")

    status, body = await ben.get(KEYS)
    assert [k["name"] for k in body["data"]] == ["ben's key"]
    status, body = await ben.get(f"{KEYS}?all=true")
    assert status == 403
    status, body = await ben.delete(f"{KEYS}/{anas['id']}")
    assert status == 404
    assert body["error"] == f"API key {anas['id']} not found"  # as if there were no such key
    script = Api(api.client)
    status, _ = await script.get(HEALTH, headers=x_api_key(anas["key"]))
    assert status == 403  # still alive: refused for ana's role, not as an unknown key

    status, body = await admin.get(f"{KEYS}?all=true")
    assert status == 200
    owners = {k["name"]: k["user"]["username"] for k in body["data"]}
    assert owners == {"ana's key": "ana", "ben's key": "ben"}
    status, body = await admin.get(KEYS)
    assert body["data"] == []  # without all=true: only the admin's own keys
    status, body = await admin.delete(f"{KEYS}/{anas['id']}")
    assert status == 200
    status, _ = await script.get(KEYS, headers=x_api_key(anas["key"]))
    assert status == 401
    assert await db.fetchval(
        "SELECT detail FROM audit_logs WHERE action = 'api_keys.delete' AND status = 200"
    ) == {"name": "ana's key", "prefix": anas["prefix"], "owner": "ana"}


async def test_key_follows_its_owners_current_role_and_existence(
    probe_api: Api, db: Any
) -> None:
    uid = await make_user(db, "carol", role="member")
    await sign_in(probe_api, "carol", PASSWORD)
    key = (await create_key(probe_api))["key"]
    script = Api(probe_api.client)

    status, body = await script.get(HEALTH, headers=x_api_key(key))
    assert status == 403
    assert body["error"] == "requires the admin role"
    await db.execute("UPDATE users SET role = 'admin' WHERE id = $1", uid)
    status, _ = await script.get(HEALTH, headers=x_api_key(key))
    assert status == 200

    await db.execute("UPDATE users SET role = 'viewer' WHERE id = $1", uid)
    status, body = await script.post(PROBE, {}, headers=x_api_key(key))
    assert status == 403
    assert body["error"] == "requires the member role"
    await db.execute("UPDATE users SET role = 'member' WHERE id = $1", uid)
    status, _ = await script.post(PROBE, {}, headers=x_api_key(key))
    assert status == 200

    await db.execute("UPDATE users SET disabled = true WHERE id = $1", uid)
    status, _ = await script.get(PROBE, headers=x_api_key(key))
    assert status == 401
    await db.execute("UPDATE users SET disabled = false WHERE id = $1", uid)
    status, _ = await script.get(PROBE, headers=x_api_key(key))
    assert status == 200

    await db.execute("DELETE FROM users WHERE id = $1", uid)
    status, _ = await script.get(PROBE, headers=bearer(key))
    assert status == 401
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_browser_session_manages_keys_with_csrf(api: Api, db: Any) -> None:
    await api.login()
    data = await create_key(api, "from the browser", scope="read")
    csrf, api.csrf = api.csrf, None
    status, body = await api.post(KEYS, {"name": "no csrf"})
    assert status == 403
    assert "X-CSRF-Token" in body["error"]
    status, body = await api.delete(f"{KEYS}/{data['id']}")
    assert status == 403
    api.csrf = csrf
    assert await db.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL") == 1

    # The header credential wins over the browser's cookie.
    status, body = await api.get("/api/auth/me", headers=x_api_key(data["key"]))
    assert status == 200, body
    assert body["data"]["principal"] == {"kind": "api_key", "id": data["id"], "read_only": True}
    assert "csrf_token" not in body["data"]


async def test_a_misspelt_field_is_refused_not_ignored(api: Api, db: Any) -> None:
    """Dropping unknown fields would turn ``expires_in_day`` and ``"scope "`` into a
    full-scope key that never expires: looser than what was asked for."""
    await sign_in(api)
    status, body = await api.post(KEYS, {"name": "k", "expires_in_day": 1, "scope ": "read"})
    assert (status, body) == (422, {"error": "unknown fields expires_in_day, 'scope '"})
    status, body = await api.get(f"{KEYS}?al=true")
    assert (status, body) == (422, {"error": "unknown query parameter al"})
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 0
