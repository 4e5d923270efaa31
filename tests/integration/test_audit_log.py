"""The audit trail: every sign-in attempt and every write is recorded with who,
what, target, IP and outcome, and administrators can search it."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

import aiohttp
import pyotp
import pytest

ADMIN_PASSWORD = "correct horse battery staple"
PASSWORD = "a long enough passphrase"


async def entries(api: Any, query: str = "") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    status, body = await api.get(f"/api/audit-logs?{query}")
    assert status == 200, body
    return body["data"], body["pagination"]


async def test_every_sign_in_attempt_is_recorded(api: Any, new_api: Any) -> None:
    await api.login()
    other = await new_api()
    for username, password in [("admin", "not the password"), ("ghost", "anything at all")]:
        assert (await other.post("/api/auth/login",
                                 {"username": username, "password": password}))[0] == 401
    for _ in range(3):  # five failures from this IP: it is locked now
        await other.post("/api/auth/login", {"username": "admin", "password": "wrong again"})
    status, _ = await other.post("/api/auth/login",
                                 {"username": "admin", "password": ADMIN_PASSWORD})
    assert status == 429

    logins, page = await entries(api, "action=auth.login")
    assert page["total"] == 7
    locked, *failures, unknown, wrong, success = logins  # newest first

    assert success["outcome"] == "success" and success["status"] == 200
    assert (success["actor"], success["actor_user_id"]) == ("admin", 1)
    assert success["principal_kind"] == "session"
    assert success["target"] == "user:1"
    assert success["ip"] == "127.0.0.1"
    assert success["request_id"]

    assert (wrong["actor"], wrong["actor_user_id"], wrong["outcome"], wrong["status"]) == (
        "admin", None, "denied", 401)
    assert wrong["detail"] == {"reason": "bad credentials"}
    assert wrong["ip"] == "127.0.0.1"

    assert (unknown["actor"], unknown["outcome"], unknown["status"]) == ("ghost", "denied", 401)
    assert unknown["detail"] == {"reason": "bad credentials"}

    assert len(failures) == 3
    assert (locked["actor"], locked["outcome"], locked["status"]) == ("admin", "failure", 429)
    assert locked["detail"] == {"reason": "locked out"}


async def test_writes_are_recorded_with_actor_target_and_outcome(
    api: Any, new_api: Any
) -> None:
    await api.login()
    status, body = await api.post("/api/users",
                                  {"username": "vic", "password": PASSWORD, "role": "viewer"})
    assert status == 201
    vic_id = body["data"]["id"]
    assert (await api.post("/api/users", {"username": "VIC", "password": PASSWORD}))[0] == 409
    assert (await api.put(f"/api/users/{vic_id}", {"role": "member"}))[0] == 200
    vic = await new_api()
    await vic.login("vic", PASSWORD)
    assert (await vic.post("/api/users", {"username": "eve", "password": PASSWORD}))[0] == 403

    logs, _ = await entries(api, "action=users.")
    denied, update, duplicate, create = logs
    assert (create["action"], create["outcome"]) == ("users.create", "success")
    assert create["status"] == 201
    assert (create["actor"], create["target"]) == ("admin", f"user:{vic_id}")
    assert create["detail"] == {"username": "vic", "role": "viewer"}

    assert (duplicate["outcome"], duplicate["status"]) == ("failure", 409)

    assert (update["action"], update["target"]) == ("users.update", f"user:{vic_id}")
    assert update["detail"]["role"] == {"from": "viewer", "to": "member"}

    assert (denied["action"], denied["outcome"]) == ("users.create", "denied")
    assert denied["status"] == 403
    assert (denied["actor"], denied["actor_user_id"]) == ("vic", vic_id)


async def test_reads_are_not_recorded(api: Any) -> None:
    await api.login()
    for _ in range(3):
        await api.get("/api/users")
    _, page = await entries(api)
    assert page["total"] == 1  # the sign-in only


async def test_filters(api: Any, new_api: Any, aiohttp_client: Any, client: Any) -> None:
    await api.login()
    await api.post("/api/users", {"username": "bob", "password": PASSWORD})
    await api.post("/api/users", {"username": "carol", "password": PASSWORD})
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    remote = await aiohttp_client(client.server, connector=connector)
    async with remote.post("/api/auth/login",
                           json={"username": "Bob", "password": "wrong password"}) as resp:
        assert resp.status == 401

    assert [e["action"] for e in (await entries(api, "actor=ADMIN"))[0]] == [
        "users.create", "users.create", "auth.login"]
    assert [e["actor"] for e in (await entries(api, "actor=bob"))[0]] == ["Bob"]
    assert {e["action"] for e in (await entries(api, "action=users"))[0]} == {"users.create"}
    assert (await entries(api, "action=users_"))[1]["total"] == 0  # '_' is no wildcard
    assert [e["actor"] for e in (await entries(api, "outcome=denied"))[0]] == ["Bob"]
    logs, _ = await entries(api, "ip=127.0.0.2")
    assert [(e["actor"], e["ip"]) for e in logs] == [("Bob", "127.0.0.2")]
    carol = (await entries(api, "action=users.create"))[0][0]
    assert (await entries(api, f"target={carol['target']}"))[0] == [carol]


async def test_time_range_and_pagination(api: Any) -> None:
    await api.login()
    for name in ("u1", "u2", "u3", "u4"):
        await api.post("/api/users", {"username": name, "password": PASSWORD})
    everything, page = await entries(api)
    assert page == {"limit": 50, "offset": 0, "total": 5}
    ats = [e["at"] for e in everything]
    assert ats == sorted(ats, reverse=True)

    logs, page = await entries(api, "limit=2&offset=1")
    assert page == {"limit": 2, "offset": 1, "total": 5}
    assert [e["id"] for e in logs] == [e["id"] for e in everything[1:3]]

    middle = everything[2]
    since, _ = await entries(api, "since=" + quote(middle["at"]))
    assert [e["id"] for e in since] == [e["id"] for e in everything[:3]]
    until, _ = await entries(api, "until=" + quote(middle["at"]))
    assert [e["id"] for e in until] == [e["id"] for e in everything[3:]]

    # An offset typed straight into a URL arrives with its '+' turned into a space.
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert (await entries(api, f"since={yesterday}+00:00"))[1]["total"] == 5
    assert (await entries(api, f"until={yesterday}"))[1]["total"] == 0  # naive means UTC
    assert (await entries(api, "since=2999-01-01"))[1]["total"] == 0


@pytest.mark.parametrize(("query", "fragment"), [
    ("limit=0", "limit: must be at least 1"),
    ("limit=501", "limit: must be at most 500"),
    ("limit=ten", "query parameter limit: must be an integer"),
    ("offset=-1", "offset: must be at least 0"),
    ("outcome=maybe", "outcome: must be one of success, failure, denied"),
    ("since=yesterday", "query parameter since: must be an ISO 8601 date-time"),
    ("until=2026-13-40", "query parameter until: must be an ISO 8601 date-time"),
    ("since=2026-01-02&until=2026-01-01", "since must be before until"),
    ("actor=%00", "actor: must not contain NUL"),
    ("since=9999-12-31T23:59:59-23:59", "query parameter since: out of range"),
    ("until=0001-01-01T00:00:00%2B23:59", "query parameter until: out of range"),
])
async def test_bad_queries_are_422(api: Any, query: str, fragment: str) -> None:
    await api.login()
    status, body = await api.get(f"/api/audit-logs?{query}")
    assert status == 422
    assert fragment in body["error"]


async def test_audit_log_is_for_admins(api: Any, new_api: Any) -> None:
    await api.login()
    await api.post("/api/users", {"username": "mia", "password": PASSWORD, "role": "member"})
    mia = await new_api()
    await mia.login("mia", PASSWORD)
    assert (await mia.get("/api/audit-logs"))[0] == 403
    assert (await (await new_api()).get("/api/audit-logs"))[0] == 401


async def test_no_secret_reaches_the_audit_log(api: Any, new_api: Any, db: Any) -> None:
    data = await api.login()
    await api.post("/api/users", {"username": "sam", "password": PASSWORD})
    new_admin_password = "another admin passphrase"
    await api.put("/api/auth/password",
                  {"current_password": ADMIN_PASSWORD, "new_password": new_admin_password})
    _, body = await api.post("/api/auth/2fa/setup", {"password": new_admin_password})
    secret = body["data"]["secret"]
    _, body = await api.post("/api/auth/2fa/enable", {"code": pyotp.TOTP(secret).now()})
    codes = body["data"]["recovery_codes"]
    other = await new_api()
    await other.post("/api/auth/login", {"username": "admin", "password": "a wrong guess!!"})
    _, body = await api.post("/api/auth/api-keys", {"name": "ci"})
    key = body["data"]["key"]

    dump = str([dict(r) for r in await db.fetch("SELECT * FROM audit_logs")])
    assert "auth.password" in dump and "two_factor.enable" in dump  # the writes are there
    for secret_text in [ADMIN_PASSWORD, new_admin_password, PASSWORD, "a wrong guess!!",
                        secret, data["csrf_token"], key, *codes]:
        assert secret_text not in dump


async def test_the_action_prefix_is_literal_backslashes_included(api: Any, db: Any) -> None:
    r"""In LIKE a backslash escapes the next character, so the prefix ``x\`` must be sent
    as ``x\\`` or it turns the ``%`` after it into a literal."""
    await api.login()
    for action in ("odd\\thing", "odd\\%thing", "odd_thing", "oddXthing"):
        await db.execute(
            "INSERT INTO audit_logs (action, outcome) VALUES ($1, 'success')", action
        )
    for prefix, found in [("odd\\", {"odd\\thing", "odd\\%thing"}), ("odd\\%", {"odd\\%thing"}),
                          ("odd\\t", {"odd\\thing"}), ("odd_", {"odd_thing"}), ("odd%", set())]:
        logs, _ = await entries(api, "action=" + quote(prefix))
        assert {e["action"] for e in logs} == found, prefix
