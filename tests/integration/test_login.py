"""Browser sign-in and sign-out, the session cookie, CSRF, and the sign-in throttle
(5 failures per 60 s per IP and per account → 429 for 300 s)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import ipaddress
import secrets
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from beeyard.server.app import SESSION_COOKIE, create_app
from beeyard.server.auth import passwords
from beeyard.server.auth.login import LIMITER
from beeyard.server.auth.ratelimit import LoginLimiter
from beeyard.server.db import migrate
from beeyard.server.services.throttle import sweep as throttle_sweep
from conftest import _with_db

PASSWORD = "a long enough passphrase"


class Clock:
    """A monotonic clock the test moves by hand, so lockouts need no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def make_user(api: Any, username: str, role: str = "member") -> int:
    status, body = await api.post(
        "/api/users", {"username": username, "password": PASSWORD, "role": role}
    )
    assert status == 201, body
    return int(body["data"]["id"])


async def attempt(
    client: Any, username: str, password: str, **extra: Any
) -> tuple[int, dict[str, Any], Any]:
    """One sign-in, returning status, JSON and headers."""
    payload = {"username": username, "password": password, **extra}
    async with client.post("/api/auth/login", json=payload) as resp:
        return resp.status, await resp.json(), resp.headers


# -- sign-in, cookie, CSRF -----------------------------------------------------------


async def test_login_creates_session_and_cookie(api: Any, client: Any, db: Any,
                                                settings: Any) -> None:
    before = dt.datetime.now(dt.UTC)
    payload = {"username": "admin", "password": settings.admin_password}
    async with client.post("/api/auth/login", json=payload) as resp:
        assert resp.status == 200
        data = (await resp.json())["data"]
        set_cookie = resp.headers["Set-Cookie"]
    api.csrf = data["csrf_token"]
    assert data["user"] == {"id": 1, "username": "admin", "role": "admin", "totp_enabled": False}
    expires = dt.datetime.fromisoformat(data["expires_at"])
    assert abs((expires - before).total_seconds() - settings.session_ttl) < 60

    row = await db.fetchrow("SELECT * FROM sessions")
    assert row["user_id"] == 1
    assert row["csrf_token"] == data["csrf_token"]
    assert row["revoked_at"] is None
    assert len(row["token_digest"]) == 32  # a SHA-256 digest, never the token itself

    assert set_cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in set_cookie
    assert "SameSite=Strict" in set_cookie
    assert f"Max-Age={settings.session_ttl}" in set_cookie
    # The cookie is encrypted: neither the CSRF token nor the digest appears in it.
    assert data["csrf_token"] not in set_cookie
    assert row["token_digest"].hex() not in set_cookie

    status, body = await api.get("/api/auth/me")
    assert status == 200
    assert body["data"]["user"]["username"] == "admin"
    assert body["data"]["principal"]["kind"] == "session"
    assert body["data"]["csrf_token"] == data["csrf_token"]
    assert body["data"]["session"]["id"] == row["id"]
    assert "password_hash" not in body["data"]["user"]
    assert (await db.fetchval("SELECT last_login_at FROM users WHERE id = 1")) is not None


async def test_username_is_case_insensitive(api: Any) -> None:
    data = await api.login("ADMIN")
    assert data["user"]["username"] == "admin"


async def test_wrong_password_and_unknown_user_look_the_same(api: Any, db: Any) -> None:
    wrong = await api.post("/api/auth/login", {"username": "admin", "password": "not it at all"})
    unknown = await api.post("/api/auth/login", {"username": "nobody", "password": "not it at all"})
    assert wrong == unknown == (401, {"error": "invalid username or password"})
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0


async def test_me_needs_a_principal(api: Any) -> None:
    assert await api.get("/api/auth/me") == (401, {"error": "authentication required"})


async def test_cookie_writes_need_the_csrf_token(api: Any) -> None:
    data = await api.login()
    api.csrf = None
    status, body = await api.post("/api/auth/logout")
    assert status == 403
    assert "X-CSRF-Token" in body["error"]
    status, _ = await api.post("/api/auth/logout", headers={"X-CSRF-Token": "forged"})
    assert status == 403
    status, _ = await api.post("/api/auth/logout", headers={"X-CSRF-Token": data["csrf_token"]})
    assert status == 200


async def test_logout_revokes_the_session_server_side(api: Any, client: Any, new_api: Any,
                                                      db: Any) -> None:
    await api.login()
    stolen = client.session.cookie_jar.filter_cookies(client.make_url("/"))[SESSION_COOKIE].value
    status, body = await api.post("/api/auth/logout")
    assert (status, body) == (200, {"data": {"signed_out": True}})
    assert (await api.get("/api/auth/me"))[0] == 401
    assert await db.fetchval("SELECT revoked_at IS NOT NULL FROM sessions") is True
    # A copy of the cookie taken before sign-out is worthless afterwards.
    other = await new_api()
    status, _ = await other.get("/api/auth/me", headers={"Cookie": f"{SESSION_COOKIE}={stolen}"})
    assert status == 401


async def test_logout_needs_a_session(api: Any) -> None:
    assert (await api.post("/api/auth/logout"))[0] == 401


async def test_signing_in_again_replaces_the_previous_session(api: Any, db: Any) -> None:
    first = await api.login()
    second = await api.login()
    assert first["csrf_token"] != second["csrf_token"]
    rows = await db.fetch("SELECT csrf_token, revoked_at FROM sessions ORDER BY id")
    assert [r["revoked_at"] is None for r in rows] == [False, True]
    assert (await api.get("/api/auth/me"))[1]["data"]["csrf_token"] == second["csrf_token"]


async def test_disabled_user_cannot_sign_in(api: Any, new_api: Any) -> None:
    await api.login()
    uid = await make_user(api, "bob")
    assert (await api.put(f"/api/users/{uid}", {"disabled": True}))[0] == 200
    bob = await new_api()
    status, body = await bob.post("/api/auth/login", {"username": "bob", "password": PASSWORD})
    assert (status, body) == (401, {"error": "invalid username or password"})


@pytest.mark.parametrize(("payload", "message"), [
    ({"username": "admin"}, "password: is required"),
    ({"username": "", "password": "x"}, "username: must have at least 1 characters"),
    ({"username": "ad\u0000min", "password": "x"}, "username: must not contain NUL"),
    ({"username": "\ud800", "password": "x"}, "username: must not contain NUL"),
    ({"username": 7, "password": "x"}, "username: must be a string"),
    ({"username": "admin", "password": "x" * 2000}, "password: must have at most 1024"),
    ({"username": "admin", "password": "x", "totp_code": 123456}, "totp_code: must be a string"),
])
async def test_bad_login_input_is_422(api: Any, payload: dict[str, Any], message: str) -> None:
    status, body = await api.post("/api/auth/login", payload)
    assert status == 422
    assert body["error"].startswith(message)


async def test_login_body_must_be_json_object(client: Any) -> None:
    async with client.post("/api/auth/login", data=b"{not json",
                           headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert "not valid JSON" in (await resp.json())["error"]
    async with client.post("/api/auth/login", json=["admin", "pw"]) as resp:
        assert resp.status == 422


# -- the throttle ----------------------------------------------------------------------


@pytest.fixture
async def throttled(settings: Any, aiohttp_client: Any) -> Any:
    """The app with a hand-driven clock; ``connect(ip)`` gives a client whose requests
    really come from that loopback address (all of 127.0.0.0/8 reaches the server)."""
    clock = Clock()
    app = create_app(settings)
    app[LIMITER] = LoginLimiter(
        settings.login_max_failures, settings.login_window, settings.login_lockout, clock=clock
    )
    first = await aiohttp_client(app)

    async def connect(ip: str) -> Any:
        if ip == "127.0.0.1":
            return first
        connector = aiohttp.TCPConnector(local_addr=(ip, 0))
        return await aiohttp_client(first.server, connector=connector)

    return clock, connect


async def _admin_creates(client: Any, *names: str) -> None:
    status, body, _ = await attempt(client, "admin", "correct horse battery staple")
    assert status == 200, body
    headers = {"X-CSRF-Token": body["data"]["csrf_token"]}
    for name in names:
        payload = {"username": name, "password": PASSWORD, "role": "viewer"}
        async with client.post("/api/users", json=payload, headers=headers) as resp:
            assert resp.status == 201
    async with client.post("/api/auth/logout", headers=headers) as resp:
        assert resp.status == 200


async def test_account_locks_after_five_failures(throttled: Any) -> None:
    clock, connect = throttled
    client = await connect("127.0.0.1")
    await _admin_creates(client, "alice")
    remaining = []
    for _ in range(5):
        status, body, headers = await attempt(client, "alice", "wrong password!")
        assert status == 401
        assert headers["X-RateLimit-Limit"] == "5"
        remaining.append(headers["X-RateLimit-Remaining"])
    assert remaining == ["4", "3", "2", "1", "0"]

    # Locked: even the right password is refused, without a password check.
    status, body, headers = await attempt(client, "alice", PASSWORD)
    assert status == 429
    assert headers["Retry-After"] == "300"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert "300 seconds" in body["error"]

    clock.now += 120
    status, _, headers = await attempt(client, "alice", PASSWORD)
    assert (status, headers["Retry-After"]) == (429, "180")

    clock.now += 181
    status, body, headers = await attempt(client, "alice", PASSWORD)
    assert status == 200, body
    assert headers["X-RateLimit-Remaining"] == "5"


async def test_failures_older_than_the_window_are_forgotten(throttled: Any) -> None:
    clock, connect = throttled
    client = await connect("127.0.0.1")
    await _admin_creates(client, "alice")
    for _ in range(4):
        assert (await attempt(client, "alice", "wrong password!"))[0] == 401
    clock.now += 61
    status, _, headers = await attempt(client, "alice", "wrong password!")
    assert (status, headers["X-RateLimit-Remaining"]) == (401, "4")
    assert (await attempt(client, "alice", PASSWORD))[0] == 200


async def test_one_ip_is_locked_across_accounts(throttled: Any) -> None:
    _, connect = throttled
    here = await connect("127.0.0.1")
    await _admin_creates(here, "alice")
    for i in range(5):  # five different usernames: no account reaches five
        assert (await attempt(here, f"guess{i}", "wrong password!"))[0] == 401
    status, _, headers = await attempt(here, "alice", PASSWORD)
    assert status == 429
    assert int(headers["Retry-After"]) == 300
    elsewhere = await connect("127.0.0.2")
    status, body, _ = await attempt(elsewhere, "alice", PASSWORD)
    assert status == 200, body


async def test_locked_account_does_not_lock_another_account(throttled: Any) -> None:
    _, connect = throttled
    first = await connect("127.0.0.1")
    await _admin_creates(first, "alice", "bob")
    for _ in range(5):
        assert (await attempt(first, "alice", "wrong password!"))[0] == 401
    second = await connect("127.0.0.2")
    status, body, _ = await attempt(second, "bob", PASSWORD)
    assert status == 200, body
    # The account itself stays locked whatever the address.
    assert (await attempt(second, "alice", PASSWORD))[0] == 429


async def test_account_lock_counts_failures_from_every_ip(throttled: Any) -> None:
    _, connect = throttled
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    clients = [await connect(ip) for ip in ips]
    await _admin_creates(await connect("127.0.0.1"), "alice")
    for i in range(5):  # at most two failures from any one address
        assert (await attempt(clients[i % 3], "alice", "wrong password!"))[0] == 401
    fresh = await connect("127.0.0.5")
    assert (await attempt(fresh, "alice", PASSWORD))[0] == 429


async def test_unknown_user_costs_the_same_hash_as_a_wrong_password(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing is not asserted; the work is: one scrypt with the same cost parameters
    whether or not the user exists."""
    calls: list[tuple[int, int, int, int]] = []
    real = hashlib.scrypt

    def counting(password: bytes, *, salt: bytes, n: int, r: int, p: int, **kw: Any) -> bytes:
        calls.append((n, r, p, len(salt)))
        return real(password, salt=salt, n=n, r=r, p=p, **kw)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    wrong = {"username": "admin", "password": "wrong one"}
    assert (await api.post("/api/auth/login", wrong))[0] == 401
    known = list(calls)
    calls.clear()
    unknown_user = {"username": "ghost", "password": "wrong one"}
    assert (await api.post("/api/auth/login", unknown_user))[0] == 401
    unknown = list(calls)
    assert len(known) == len(unknown) == 1
    assert known == unknown
    assert known[0][0] >= 2**14  # and it is the memory-hard cost, not a shortcut


async def test_signing_in_again_needs_no_csrf_header(api: Any, db: Any) -> None:
    """A browser whose page lost the CSRF token can still sign in; its old cookie
    just lends no authority to that request."""
    await api.login()
    api.csrf = None
    data = await api.login()
    assert (await api.get("/api/auth/me"))[1]["data"]["csrf_token"] == data["csrf_token"]
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NULL") == 2


# -- bursts of parallel attempts ---------------------------------------------------------

RIGHT = "correct horse battery staple"


class Scrypt:
    """Counts the real scrypt calls (which run in the hashing threads) and can hold them
    at a gate, so a test can look at the server while hashes are in progress."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, gated: bool = False) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        real = hashlib.scrypt

        def scrypt(password: bytes, **kw: Any) -> bytes:
            self.calls.append(1)
            self.gate.wait(30)  # never hang a thread for good, whatever the test does
            return real(password, **kw)

        monkeypatch.setattr(hashlib, "scrypt", scrypt)


async def until(condition: Any, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting until {what}")


async def test_a_parallel_burst_gets_no_more_guesses_than_the_allowance(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock is checked before the hash and the failure known after it: without a
    reservation, 30 parallel guesses would all pass the check and all be judged."""
    scrypt = Scrypt(monkeypatch)
    results = await asyncio.gather(
        *(attempt(client, "admin", f"wrong guess {i}") for i in range(30))
    )
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [401] * 5 + [429] * 25
    assert len(scrypt.calls) == 5
    status, _, headers = await attempt(client, "admin", RIGHT)
    assert (status, headers["Retry-After"]) == (429, "300")
    assert len(scrypt.calls) == 5


async def test_the_right_password_within_a_burst_does_not_sign_in(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scrypt = Scrypt(monkeypatch, gated=True)
    try:
        burst = [asyncio.ensure_future(attempt(client, "admin", f"wrong guess {i}"))
                 for i in range(30)]
        # Five are being judged; the other 25 are refused at once, not queued.
        await until(lambda: sum(f.done() for f in burst) == 25, "25 refusals came back")
        refused = [f.result() for f in burst if f.done()]
        assert {status for status, _, _ in refused} == {429}
        assert {headers["Retry-After"] for _, _, headers in refused} == {"1"}
        assert all("at once" in body["error"] for _, body, _ in refused)
        status, body, headers = await asyncio.wait_for(attempt(client, "admin", RIGHT), 10)
        assert (status, headers["X-RateLimit-Remaining"]) == (429, "0"), body
    finally:
        scrypt.gate.set()
    results = await asyncio.gather(*burst)
    assert sorted(status for status, _, _ in results) == [401] * 5 + [429] * 25
    assert len(scrypt.calls) == 5
    status, body, headers = await attempt(client, "admin", RIGHT)
    assert (status, headers["Retry-After"]) == (429, "300"), body


async def test_a_burst_of_wrong_current_passwords_is_throttled_too(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.login()
    scrypt = Scrypt(monkeypatch)
    change = {"current_password": "not my password", "new_password": "a new long passphrase"}
    results = await asyncio.gather(*(api.put("/api/auth/password", change) for _ in range(30)))
    assert sorted(status for status, _ in results) == [403] * 5 + [429] * 25
    assert len(scrypt.calls) == 5


# -- the hashing pool ---------------------------------------------------------------------


@pytest.fixture
async def behind_proxy(settings: Any, aiohttp_client: Any) -> Any:
    """The app behind a trusted proxy on 127.0.0.1, so X-Forwarded-For chooses each
    request's client address (any number of them, IPv6 included)."""
    proxied = dataclasses.replace(
        settings, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),)
    )
    return await aiohttp_client(create_app(proxied))


async def attempt_from(
    client: Any, ip: str, username: str, password: str
) -> tuple[int, dict[str, Any], Any]:
    payload = {"username": username, "password": password}
    async with client.post("/api/auth/login", json=payload,
                           headers={"X-Forwarded-For": ip}) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_a_sign_in_flood_neither_starves_static_files_nor_queues_without_end(
    behind_proxy: Any, monkeypatch: pytest.MonkeyPatch, db: Any
) -> None:
    """Hashes run on their own small pool: the default executor, which serves static
    files, stays free; and beyond MAX_WAITING queued hashes a sign-in is refused at
    once with 503 instead of waiting behind the flood."""
    client = behind_proxy
    scrypt = Scrypt(monkeypatch, gated=True)
    admitted = passwords.WORKERS + passwords.MAX_WAITING
    flood = admitted + 30
    try:
        burst = [asyncio.ensure_future(attempt_from(client, f"10.0.{i // 250}.{i % 250 + 1}",
                                                    f"user{i}", "a wrong guess"))
                 for i in range(flood)]
        await until(lambda: sum(f.done() for f in burst) == flood - admitted,
                    "the requests beyond the queue were refused")
        busy = [f.result() for f in burst if f.done()]
        assert {status for status, _, _ in busy} == {503}
        assert {headers["Retry-After"] for _, _, headers in busy} == {"1"}
        assert len(scrypt.calls) == passwords.WORKERS  # the rest wait in the queue
        async with asyncio.timeout(10):  # hangs if hashing holds the default executor
            async with client.get("/") as resp:
                assert resp.status == 200
                await resp.read()
    finally:
        scrypt.gate.set()
    results = await asyncio.gather(*burst)
    assert sorted(s for s, _, _ in results) == [401] * admitted + [503] * (flood - admitted)
    # One 503 is logged as it happened; the rest are counted into one summary.
    assert await db.fetchval(
        "SELECT count(*) FROM audit_logs WHERE action = 'auth.login' AND status = 503") == 1
    await throttle_sweep(client.server.app)
    row = await db.fetchrow("SELECT * FROM audit_logs WHERE action = 'auth.throttled'")
    assert (row["target"], row["status"]) == ("busy", 503)
    assert row["detail"]["refused"] == flood - admitted


async def test_ipv6_clients_share_the_lockout_of_their_64(behind_proxy: Any) -> None:
    client = behind_proxy
    for i in range(5):
        status, _, _ = await attempt_from(client, f"2001:db8:7:7::{i + 1}", f"guess{i}", "wrong!")
        assert status == 401
    status, _, headers = await attempt_from(client, "2001:db8:7:7:ffff::1", "admin", RIGHT)
    assert (status, headers["Retry-After"]) == (429, "300")
    status, body, _ = await attempt_from(client, "2001:db8:7:8::1", "admin", RIGHT)
    assert status == 200, body


# -- refusals in the audit log --------------------------------------------------------------


async def test_a_locked_account_logs_its_first_refusal_and_counts_the_rest(
    throttled: Any, db: Any
) -> None:
    clock, connect = throttled
    client = await connect("127.0.0.1")
    await _admin_creates(client, "alice")
    for _ in range(5):
        assert (await attempt(client, "alice", "wrong password!"))[0] == 401
    for _ in range(40):
        assert (await attempt(client, "alice", PASSWORD))[0] == 429
    rows = await db.fetch(
        "SELECT status, detail FROM audit_logs WHERE action = 'auth.login' AND actor = 'alice'"
    )
    assert sorted(r["status"] for r in rows) == [401] * 5 + [429]
    app = client.server.app
    await throttle_sweep(app)  # still locked: still counting, nothing written yet
    assert await db.fetchval(
        "SELECT count(*) FROM audit_logs WHERE action = 'auth.throttled'") == 0

    clock.now += 301
    await throttle_sweep(app)
    rows = await db.fetch(
        "SELECT actor, ip, target, status, outcome, detail FROM audit_logs "
        "WHERE action = 'auth.throttled' ORDER BY target"
    )
    assert [(r["target"], r["actor"], r["ip"]) for r in rows] == [
        ("ip:127.0.0.1", None, "127.0.0.1"), ("user:alice", "alice", None)]
    for r in rows:
        assert (r["status"], r["outcome"]) == (429, "failure")
        assert (r["detail"]["refused"], r["detail"]["ended"]) == (40, True)
    assert app[LIMITER]._entries == {}  # pruned on the timer, no fail() needed
    status, body, _ = await attempt(client, "alice", PASSWORD)
    assert status == 200, body


# -- usernames ---------------------------------------------------------------------------


async def test_login_forms_share_one_definition_of_the_credentials(api: Any) -> None:
    """Web and mobile sign-in take the same username and password: the same bounds,
    the same answers."""
    cases = [
        ({"username": "u" * 250, "password": "a wrong guess"}, 401),
        ({"username": "u" * 257, "password": "a wrong guess"}, 422),
        ({"username": "admin", "password": "x" * passwords.MAX_LENGTH}, 401),
        ({"username": "admin", "password": "x" * (passwords.MAX_LENGTH + 1)}, 422),
    ]
    for payload, expected in cases:
        web_status, web_body = await api.post("/api/auth/login", payload)
        mobile_status, mobile_body = await api.post(
            "/api/mobile/auth/login", {**payload, "device_name": "phone"}
        )
        assert web_status == mobile_status == expected, (payload, web_body, mobile_body)
        assert web_body == mobile_body


async def test_usernames_outside_the_rule_are_unknown_users(
    api: Any, monkeypatch: pytest.MonkeyPatch, db: Any
) -> None:
    """No account can have such a name, so the lookup is skipped, but the dummy hash is
    still paid and the attempt still counts against the address."""
    scrypt = Scrypt(monkeypatch)
    for name in ("ad min", "admin\u0130", "ａｄｍｉｎ", "admin\n", "a" * 65):
        status, body = await api.post("/api/auth/login", {"username": name, "password": RIGHT})
        assert (status, body) == (401, {"error": "invalid username or password"}), name
    assert len(scrypt.calls) == 5
    assert (await api.post("/api/auth/login", {"username": "admin", "password": RIGHT}))[0] == 429
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0


@pytest.fixture
async def utf8_settings(pg_admin_url: str, settings: Any) -> AsyncIterator[Any]:
    """A database whose libc locale is C.UTF-8, where SQL lower('ADMİN') is 'admin'
    (the embedded cluster's default C locale leaves 'İ' alone)."""
    name = f"beeyard_test_utf8_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
                            "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'")
    except asyncpg.PostgresError as exc:
        await admin.close()
        pytest.skip(f"this PostgreSQL has no C.UTF-8 locale: {exc}")
    url = _with_db(pg_admin_url, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate.migrate(conn)
        assert await conn.fetchval("SELECT lower('ADM\u0130N') = 'admin'")
    finally:
        await conn.close()
    try:
        yield dataclasses.replace(settings, database_url=url)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_look_alike_username_neither_signs_in_nor_escapes_the_lockout(
    utf8_settings: Any, aiohttp_client: Any
) -> None:
    """'ADMİN' (capital I with a dot) is 'admin' to SQL lower() here, but not to
    Python's: it once found the admin account under a lockout count of its own."""
    client = await aiohttp_client(create_app(utf8_settings))
    look_alike = "ADM\u0130N"
    status, _, _ = await attempt(client, look_alike, RIGHT)
    assert status == 401  # not a name any account can have
    for _ in range(4):
        assert (await attempt(client, "admin", "wrong password!"))[0] == 401
    status, _, _ = await attempt(client, look_alike, RIGHT)
    assert status == 429  # the address's five failures; never a sign-in
    elsewhere = await aiohttp_client(client.server,
                                     connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)))
    status, _, _ = await attempt(elsewhere, look_alike, RIGHT)
    assert status == 401  # the account is not locked; the look-alike still is no one
    assert (await attempt(elsewhere, "ADMIN", RIGHT))[0] == 200
