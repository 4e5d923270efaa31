"""Every registered route × every kind of principal, against the real database.

The routes come from the application's own route table, so a new route is
checked the moment it is registered. What each route *should* require is
written down here, in ``POLICY``, apart from the declarations in the api
modules: a route missing from ``POLICY``, or declared with another access level
than ``POLICY`` says, fails the suite. So loosening a route's access takes two
deliberate edits, and a route cannot be added without stating who may call it.

For each route and principal the expected outcome follows from the policy
access level and the method: 401 for anonymous callers of non-public routes,
403 when the role or the key's scope is insufficient (API keys on account and
user-administration routes; read-only keys on writes; cookie writes without the
CSRF token), and
otherwise an answer that is neither 401, 403 nor 5xx (public routes included: a
cookie without its CSRF token on a public write counts as anonymous). Path parameters are a
harmless id that does not exist; writes send ``{}``. Each route gets a fresh
database, fresh users and fresh credentials, so a route that ends a session or
revokes a device cannot disturb another route's check.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import secrets
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from beeyard.server.app import SESSION_COOKIE, create_app
from beeyard.server.auth.passwords import hash_sync
from beeyard.server.auth.principal import Access
from beeyard.server.config import Settings
from beeyard.server.http import routing
from beeyard.server.http.routing import Route

# Who may call what. Mirrors the public contract (seed 000): account routes are a
# signed-in person's own business; user administration, audit and other users'
# sessions are admin's. Change a line here only together with the declaration.
POLICY: dict[str, Access] = {
    # public: docs, health, signing in
    "GET /api-docs/openapi.json": Access.PUBLIC,
    "GET /api/health": Access.PUBLIC,
    "POST /api/auth/login": Access.PUBLIC,
    "POST /api/mobile/auth/login": Access.PUBLIC,
    "POST /api/mobile/auth/refresh": Access.PUBLIC,
    "POST /api/agent/register": Access.PUBLIC,  # the one-time code is the credential
    # the agent link: an agent's run token and nothing else
    "GET /api/agent/ws": Access.AGENT,
    # any signed-in principal
    "GET /api/auth/me": Access.VIEWER,
    # one's own account: people only, never an API key
    "POST /api/auth/logout": Access.ACCOUNT,
    "PUT /api/auth/password": Access.ACCOUNT,
    "GET /api/auth/sessions": Access.ACCOUNT,
    "DELETE /api/auth/sessions": Access.ACCOUNT,
    "DELETE /api/auth/sessions/{id}": Access.ACCOUNT,
    "GET /api/auth/2fa": Access.ACCOUNT,
    "POST /api/auth/2fa/setup": Access.ACCOUNT,
    "POST /api/auth/2fa/enable": Access.ACCOUNT,
    "POST /api/auth/2fa/disable": Access.ACCOUNT,
    "POST /api/auth/2fa/recovery-codes": Access.ACCOUNT,
    "GET /api/auth/api-keys": Access.ACCOUNT,
    "POST /api/auth/api-keys": Access.ACCOUNT,
    "DELETE /api/auth/api-keys/{id}": Access.ACCOUNT,
    "POST /api/mobile/auth/logout": Access.ACCOUNT,
    "GET /api/mobile/auth/devices": Access.ACCOUNT,
    "DELETE /api/mobile/auth/devices/{id}": Access.ACCOUNT,
    # administration
    "GET /api/admin/health/detailed": Access.ADMIN,
    "GET /api/audit-logs": Access.ADMIN,
    "GET /api/sessions": Access.ADMIN,
    "DELETE /api/sessions/{id}": Access.ADMIN,
    "GET /api/users": Access.ADMIN,
    "GET /api/users/{id}": Access.ADMIN,
    # enrolling hosts: admins, API keys included (provisioning scripts)
    "GET /api/agent/enrollments": Access.ADMIN,
    "POST /api/agent/enrollments": Access.ADMIN,
    "DELETE /api/agent/enrollments/{id}": Access.ADMIN,
    "POST /api/agent/{id}/rotate-token": Access.ADMIN,
    # creating users and changing their credentials or privileges: an admin in person,
    # never an API key
    "POST /api/users": Access.ADMIN_INTERACTIVE,
    "PUT /api/users/{id}": Access.ADMIN_INTERACTIVE,
    "DELETE /api/users/{id}": Access.ADMIN_INTERACTIVE,
    # the fleet: anyone signed in reads it (live streams and Prometheus included);
    # admins arrange and delete servers
    "GET /api/servers": Access.VIEWER,
    "GET /api/servers/{id}": Access.VIEWER,
    "PUT /api/servers/{id}": Access.ADMIN,
    "DELETE /api/servers/{id}": Access.ADMIN,
    "GET /api/servers/{id}/records": Access.VIEWER,
    "GET /api/servers/{id}/gpu-records": Access.VIEWER,
    "GET /api/servers/{id}/uptime-daily": Access.VIEWER,
    "GET /api/servers/{id}/traffic": Access.VIEWER,
    "GET /api/server-groups": Access.VIEWER,
    "POST /api/server-groups": Access.ADMIN,
    "PUT /api/server-groups/{id}": Access.ADMIN,
    "DELETE /api/server-groups/{id}": Access.ADMIN,
    "GET /api/server-tags": Access.VIEWER,
    "POST /api/server-tags": Access.ADMIN,
    "PUT /api/server-tags/{id}": Access.ADMIN,
    "DELETE /api/server-tags/{id}": Access.ADMIN,
    "GET /api/ws/servers": Access.VIEWER,
    "GET /api/stream": Access.VIEWER,
    "GET /api/metrics/prometheus": Access.VIEWER,
    # tasks run commands on hosts: admins only, every route (reads too: output is sensitive)
    "GET /api/tasks": Access.ADMIN,
    "POST /api/tasks": Access.ADMIN,
    "GET /api/tasks/{id}": Access.ADMIN,
    "PUT /api/tasks/{id}": Access.ADMIN,
    "DELETE /api/tasks/{id}": Access.ADMIN,
    "POST /api/tasks/{id}/run": Access.ADMIN,
    "GET /api/tasks/{id}/results": Access.ADMIN,
    "GET /api/tasks/{id}/runs/{run_id}": Access.ADMIN,
    "POST /api/tasks/{id}/runs/{run_id}/cancel": Access.ADMIN,
    "POST /api/tasks/{id}/runs/{run_id}/retry": Access.ADMIN,
    "GET /api/tasks/{id}/runs/{run_id}/events": Access.ADMIN,
    "GET /api/tasks/{id}/runs/{run_id}/servers/{server_id}/log": Access.ADMIN,
    # Docker through the host's agent: members read (logs included), admins act
    "GET /api/servers/{id}/docker/containers": Access.MEMBER,
    "GET /api/servers/{id}/docker/stats": Access.MEMBER,
    "GET /api/servers/{id}/docker/info": Access.MEMBER,
    "GET /api/servers/{id}/docker/events": Access.MEMBER,
    "GET /api/servers/{id}/docker/networks": Access.MEMBER,
    "GET /api/servers/{id}/docker/volumes": Access.MEMBER,
    "POST /api/servers/{id}/docker/containers/{cid}/action": Access.ADMIN,
    "GET /api/ws/docker/logs/{server_id}": Access.MEMBER,
    # traceroute from a host: admins start one, members read the outcome
    "POST /api/servers/{id}/traceroute": Access.ADMIN,
    "GET /api/servers/{id}/traceroute/{request_id}": Access.MEMBER,
    # the web terminal: admins only, and a channel token minted by the same principal
    "POST /api/ws/terminal/{server_id}/token": Access.ADMIN,
    "GET /api/ws/terminal/{server_id}": Access.ADMIN,
    # files through the host's agent: members browse and fetch their own transfers,
    # admins change files and start transfers
    "POST /api/files/{server_id}/list": Access.MEMBER,
    "POST /api/files/{server_id}/stat": Access.MEMBER,
    "POST /api/files/{server_id}/read": Access.MEMBER,
    "POST /api/files/{server_id}/write": Access.ADMIN,
    "POST /api/files/{server_id}/delete": Access.ADMIN,
    "POST /api/files/{server_id}/mkdir": Access.ADMIN,
    "POST /api/files/{server_id}/move": Access.ADMIN,
    "POST /api/files/{server_id}/download": Access.ADMIN,
    "POST /api/files/{server_id}/upload": Access.ADMIN,
    "PUT /api/files/{server_id}/upload": Access.ADMIN,
    "GET /api/files/transfers": Access.MEMBER,
    "GET /api/files/download/{transfer_id}": Access.MEMBER,
    "DELETE /api/files/transfers/{transfer_id}": Access.ADMIN,
}

MISSING_ID = "999999"
PASSWORD = "matrix passphrase 1"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
RANK = {"viewer": 1, "member": 2, "admin": 3}
ALLOWED = 0  # an expected outcome: any status but 401, 403 and 5xx


def key(r: Route) -> str:
    return f"{r.method} {r.path}"


def _registered() -> list[Route]:
    """The route table of a freshly built app (building one needs no database)."""
    app = create_app(Settings(secret_key=secrets.token_bytes(32), database_url="postgresql://-"))
    return sorted(app[routing.ROUTES].values(), key=lambda r: (r.path, r.method))


REGISTERED = _registered()


@dataclass(frozen=True)
class Caller:
    """One principal: how it authenticates and what it is."""

    name: str
    kind: str | None  # None (anonymous), "session", "api_key", "device", "agent"
    role: str | None = None
    read_only: bool = False
    csrf: bool = True  # cookie sessions: whether writes carry X-CSRF-Token
    headers: tuple[tuple[str, str], ...] = ()


def expected(access: Access, method: str, who: Caller) -> int:
    """The outcome the policy demands; written out here, not borrowed from the server."""
    write = method not in SAFE_METHODS
    if access is Access.PUBLIC:
        return ALLOWED  # a cookie without its CSRF token just counts as anonymous here
    if who.kind == "session" and write and not who.csrf:
        return 403  # a cookie alone never authorises a write
    if who.kind is None:
        return 401
    if access is Access.AGENT or who.kind == "agent":  # agents and people never mix
        return ALLOWED if access is Access.AGENT and who.kind == "agent" else 403
    if access is Access.ACCOUNT:
        return 403 if who.kind == "api_key" else ALLOWED
    assert who.role is not None
    if access is Access.ADMIN_INTERACTIVE:
        return 403 if who.kind == "api_key" or who.role != "admin" else ALLOWED
    if RANK[who.role] < RANK[access.value]:
        return 403
    if who.read_only and write:
        return 403
    return ALLOWED


@functools.cache
def _password_hash() -> str:
    return hash_sync(PASSWORD)


async def _user(db: asyncpg.Connection, name: str, role: str) -> None:
    await db.execute(
        "INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3)",
        name, _password_hash(), role,
    )


async def _call(
    client: TestClient[Any, Any], method: str, path: str, headers: dict[str, str],
    json: Any = None,
) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    async with client.request(method, path, headers=headers, json=json) as resp:
        if resp.status < 400 and resp.content_type != "application/json":
            # A success that is not JSON (an event stream, Prometheus text): the status is
            # the answer; the body is not read (a stream would never end).
            return resp.status, {}, resp
        assert resp.content_type == "application/json", f"{method} {path}: {resp.content_type}"
        return resp.status, await resp.json(), resp


async def _session(client: TestClient[Any, Any], username: str) -> tuple[str, str]:
    """Sign in through the API: the cookie header to send and the CSRF token."""
    status, body, resp = await _call(
        client, "POST", "/api/auth/login", {}, {"username": username, "password": PASSWORD}
    )
    assert status == 200, body
    morsel = resp.cookies[SESSION_COOKIE]
    return f"{SESSION_COOKIE}={morsel.coded_value}", body["data"]["csrf_token"]


async def callers(client: TestClient[Any, Any], db: asyncpg.Connection) -> list[Caller]:
    """Fresh users, each signed in its own way; one user per principal so that no
    principal's call can end another's credential."""
    for name, role in [
        ("mx_viewer", "viewer"), ("mx_member", "member"), ("mx_admin", "admin"),
        ("mx_admin_nocsrf", "admin"), ("mx_keys", "admin"), ("mx_mobile", "member"),
    ]:
        await _user(db, name, role)
    out = [Caller("anonymous", None)]
    for name, role in [("viewer", "viewer"), ("member", "member"), ("admin", "admin")]:
        cookie, csrf = await _session(client, f"mx_{name}")
        out.append(Caller(name, "session", role,
                          headers=(("Cookie", cookie), ("X-CSRF-Token", csrf))))
    cookie, _ = await _session(client, "mx_admin_nocsrf")
    out.append(Caller("admin without CSRF token", "session", "admin", csrf=False,
                      headers=(("Cookie", cookie),)))

    # API keys of an admin, minted through the API (read key sent as Bearer, full as X-API-Key).
    cookie, csrf = await _session(client, "mx_keys")
    minted = {}
    for scope in ("read", "full"):
        status, body, _ = await _call(
            client, "POST", "/api/auth/api-keys", {"Cookie": cookie, "X-CSRF-Token": csrf},
            {"name": f"matrix {scope}", "scope": scope},
        )
        assert status == 201, body
        minted[scope] = body["data"]["key"]
    # An enrolled agent's run token, through the enrollment API.
    status, body, _ = await _call(client, "POST", "/api/agent/enrollments",
                                  {"Cookie": cookie, "X-CSRF-Token": csrf}, {})
    assert status == 201, body
    status, body, _ = await _call(client, "POST", "/api/agent/register", {}, {
        "code": body["data"]["code"],
        "host": {"hostname": "matrix", "os": "Linux", "kernel": "6", "arch": "x86_64",
                 "cores": 1, "boot_time": 0.0}})
    assert status == 201, body
    agent_token = body["data"]["token"]
    await _call(client, "POST", "/api/auth/logout", {"Cookie": cookie, "X-CSRF-Token": csrf})
    out.append(Caller("API key (read, as Bearer)", "api_key", "admin", read_only=True,
                      headers=(("Authorization", f"Bearer {minted['read']}"),)))
    out.append(Caller("API key (full)", "api_key", "admin",
                      headers=(("X-API-Key", minted["full"]),)))

    # A member's phone, signed in through the mobile API.
    status, body, _ = await _call(
        client, "POST", "/api/mobile/auth/login", {},
        {"username": "mx_mobile", "password": PASSWORD, "device_name": "matrix phone"},
    )
    assert status == 200, body
    out.append(Caller("mobile device (member)", "device", "member",
                      headers=(("Authorization", f"Bearer {body['data']['access_token']}"),)))
    out.append(Caller("agent (run token)", "agent",
                      headers=(("Authorization", f"Bearer {agent_token}"),)))
    return out


def concrete_path(path: str) -> str:
    """``/api/users/{id}`` → ``/api/users/999999``: a resource that does not exist."""
    return re.sub(r"\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}", MISSING_ID, path)


async def check_route(
    client: TestClient[Any, Any], r: Route, access: Access, who: list[Caller]
) -> list[str]:
    """Call ``r`` as each principal; return every outcome that breaks the policy."""
    failures = []
    path = concrete_path(r.path)
    for caller in who:
        want = expected(access, r.method, caller)
        headers = dict(caller.headers)
        body = None if r.method in SAFE_METHODS else {}
        status, payload, _ = await _call(client, r.method, path, headers, body)
        if want == ALLOWED:
            ok = status not in (401, 403) and status < 500
            wanted = "allowed (not 401/403/5xx)"
        else:
            ok = status == want and isinstance(payload.get("error"), str)
            wanted = str(want)
        if not ok:
            failures.append(
                f"{r.method} {r.path} as {caller.name}: got {status} "
                f"{str(payload.get('error', ''))[:80]!r}, expected {wanted}"
            )
    return failures


@pytest.fixture
async def matrix_client(settings: Settings, aiohttp_client: Any) -> TestClient[Any, Any]:
    # No cookie jar: each principal sends its own cookie explicitly.
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(settings), cookie_jar=aiohttp.DummyCookieJar()
    )
    return client


def test_policy_names_exactly_the_registered_routes() -> None:
    registered = {key(r): r for r in REGISTERED}
    missing = sorted(set(registered) - set(POLICY))
    stale = sorted(set(POLICY) - set(registered))
    changed = sorted(
        f"{k}: declared {r.access.value}, policy says {POLICY[k].value}"
        for k, r in registered.items()
        if k in POLICY and r.access is not POLICY[k]
    )
    assert not missing, f"routes with no expected access in POLICY (add them): {missing}"
    assert not stale, f"POLICY names routes that are not registered: {stale}"
    assert not changed, f"declared access differs from POLICY: {changed}"


@pytest.mark.parametrize("route", REGISTERED, ids=key)
async def test_route_against_every_principal(
    route: Route, matrix_client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    live = {key(r): r for r in matrix_client.server.app[routing.ROUTES].values()}
    assert key(route) in live
    access = POLICY.get(key(route))
    if access is None:
        pytest.fail(f"{key(route)} is not in POLICY: state who may call it")
    who = await callers(matrix_client, db)
    assert len(who) == 9
    failures = await check_route(matrix_client, live[key(route)], access, who)
    assert not failures, "\n".join(failures)


def loosen(app: web.Application, route_key: str, access: Access) -> None:
    table = app[routing.ROUTES]
    for registered, r in table.items():
        if key(r) == route_key:
            table[registered] = dataclasses.replace(r, access=access)
            return
    raise AssertionError(f"{route_key} is not registered")


@pytest.mark.parametrize(
    ("route_key", "looser", "caught"),
    [
        ("GET /api/admin/health/detailed", Access.MEMBER, "as member: got 200"),
        ("GET /api/admin/health/detailed", Access.PUBLIC, "as anonymous: got 200"),
        ("GET /api/auth/2fa", Access.VIEWER, "as API key (full): got 200"),
        ("PUT /api/users/{id}", Access.ADMIN, "as API key (full): got 422"),
        ("POST /api/users", Access.MEMBER, "as mobile device (member): got 422"),
        ("GET /api/agent/ws", Access.PUBLIC, "as anonymous: got 426"),
        ("POST /api/agent/enrollments", Access.MEMBER, "as mobile device (member): got 201"),
    ],
)
async def test_the_matrix_catches_a_loosened_route(
    settings: Settings, aiohttp_client: Any, db: asyncpg.Connection,
    route_key: str, looser: Access, caught: str,
) -> None:
    """The check has teeth: a server whose declaration is looser than POLICY fails it."""
    app = create_app(settings)
    loosen(app, route_key, looser)
    client = await aiohttp_client(app, cookie_jar=aiohttp.DummyCookieJar())
    r = next(r for r in app[routing.ROUTES].values() if key(r) == route_key)
    failures = await check_route(client, r, POLICY[route_key], await callers(client, db))
    assert any(caught in f for f in failures), failures


def test_expected_outcomes_table() -> None:
    """The rules above, spelled out for a few cases."""
    anon = Caller("anonymous", None)
    viewer = Caller("viewer", "session", "viewer")
    nocsrf = Caller("admin", "session", "admin", csrf=False)
    read_key = Caller("read key", "api_key", "admin", read_only=True)
    phone = Caller("phone", "device", "member")
    assert expected(Access.PUBLIC, "POST", anon) == ALLOWED
    assert expected(Access.VIEWER, "GET", anon) == 401
    assert expected(Access.ADMIN, "GET", viewer) == 403
    assert expected(Access.MEMBER, "GET", phone) == ALLOWED
    assert expected(Access.ADMIN, "GET", phone) == 403
    assert expected(Access.ADMIN, "GET", read_key) == ALLOWED
    assert expected(Access.ADMIN, "DELETE", read_key) == 403
    assert expected(Access.ACCOUNT, "GET", read_key) == 403
    assert expected(Access.ACCOUNT, "POST", phone) == ALLOWED
    assert expected(Access.ADMIN, "GET", nocsrf) == ALLOWED
    assert expected(Access.ADMIN, "POST", nocsrf) == 403
    assert expected(Access.PUBLIC, "POST", nocsrf) == ALLOWED
    assert expected(Access.VIEWER, "POST", nocsrf) == 403
    full_key = Caller("full key", "api_key", "admin")
    admin = Caller("admin", "session", "admin")
    admin_phone = Caller("admin's phone", "device", "admin")
    assert expected(Access.ADMIN, "POST", full_key) == ALLOWED
    assert expected(Access.ADMIN_INTERACTIVE, "POST", full_key) == 403
    assert expected(Access.ADMIN_INTERACTIVE, "GET", read_key) == 403
    assert expected(Access.ADMIN_INTERACTIVE, "PUT", admin) == ALLOWED
    assert expected(Access.ADMIN_INTERACTIVE, "PUT", admin_phone) == ALLOWED
    assert expected(Access.ADMIN_INTERACTIVE, "PUT", phone) == 403
    assert expected(Access.ADMIN_INTERACTIVE, "DELETE", viewer) == 403
    assert expected(Access.ADMIN_INTERACTIVE, "DELETE", anon) == 401
    assert expected(Access.ADMIN_INTERACTIVE, "POST", nocsrf) == 403
    agent = Caller("agent", "agent")
    assert expected(Access.AGENT, "GET", agent) == ALLOWED
    assert expected(Access.AGENT, "GET", admin) == 403
    assert expected(Access.AGENT, "GET", full_key) == 403
    assert expected(Access.AGENT, "GET", anon) == 401
    assert expected(Access.VIEWER, "GET", agent) == 403
    assert expected(Access.PUBLIC, "POST", agent) == ALLOWED
