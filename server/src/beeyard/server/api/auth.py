"""Signing in and out of the browser UI, who am I, and changing one's own password.

The cookie holds only a random session token inside aiohttp-session's encrypted
cookie; the database holds its SHA-256 digest and the CSRF token. Checking
credentials is ``auth/login.py``'s job (throttling, dummy hash, second factor),
shared with mobile sign-in, so this module never compares a password itself.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web
from aiohttp_session import get_session, new_session

from beeyard.server import context
from beeyard.server.auth import passwords, tokens
from beeyard.server.auth.login import CREDENTIALS, authenticate, reauthenticate
from beeyard.server.auth.middleware import SESSION_KEY
from beeyard.server.auth.principal import Access, Principal
from beeyard.server.db import sessions, users
from beeyard.server.http.envelope import ApiError, ok
from beeyard.server.http.routing import route
from beeyard.shared.schema import Field, Schema

_USER_AGENT_MAX = 512

USER_BRIEF: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "username": {"type": "string"},
        "role": {"type": "string", "enum": ["admin", "member", "viewer"]},
        "totp_enabled": {"type": "boolean"},
    },
}

LOGIN = Schema("Login", CREDENTIALS)

PASSWORD = Schema("PasswordChange", (
    Field("current_password", "str", min=1, max=passwords.MAX_LENGTH, secret=True),
    Field("new_password", "str", min=1, max=passwords.MAX_LENGTH, secret=True,
          doc="at least 10 characters (a passphrase of a few words is ideal), not the "
              "username, more than two distinct characters"),
))


def user_brief(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "username", "role", "totp_enabled")}


def printable(value: str, limit: int) -> str:
    """A header value made safe to store: bounded, and without the lone surrogates
    that aiohttp uses for undecodable bytes (PostgreSQL would refuse them)."""
    return value[:limit].encode("utf-8", "replace").decode("utf-8")


@route("POST", "/api/auth/login", Access.PUBLIC, "auth.login", body=LOGIN, tags=("auth",),
       rate_limited=True, extra_statuses=(401, 429),
       response={"type": "object", "properties": {
           "user": USER_BRIEF,
           "csrf_token": {"type": "string",
                          "description": "send as X-CSRF-Token on every write"},
           "expires_at": {"type": "string", "format": "date-time"},
       }})
async def login(request: web.Request) -> web.Response:
    """Sign in: sets the session cookie and returns the CSRF token for writes.

    A 401 with ``"totp_required": true`` asks for ``totp_code``. After 5 failures in
    60 s from one IP or for one account, that IP or account is locked for 300 s (429).
    """
    body = context.body(request)
    previous: Principal | None = request.get(context.PRINCIPAL)
    # The audit record names who tried, not whoever this browser was signed in as.
    request[context.PRINCIPAL] = None  # type: ignore[misc]
    identity = await authenticate(request, body["username"], body["password"], body["totp_code"])
    pool = context.pool(request)
    if previous is not None and previous.kind == "session":
        await sessions.revoke(pool, previous.credential_id)  # no orphan left behind the new cookie
    token, digest = tokens.new_secret()
    csrf_token = secrets.token_urlsafe(32)
    row = await sessions.create(
        pool,
        user_id=identity.user_id,
        token_digest=digest,
        csrf_token=csrf_token,
        ip=context.client_ip(request),
        user_agent=printable(request.headers.get("User-Agent", ""), _USER_AGENT_MAX) or None,
        ttl_seconds=context.settings(request).session_ttl,
    )
    cookie = await new_session(request)  # a fresh cookie: no session fixation
    cookie[SESSION_KEY] = token
    user = await users.get(pool, identity.user_id)
    if user is None:  # deleted in the instant since the password check
        raise ApiError(401, "invalid username or password")
    request[context.PRINCIPAL] = Principal(
        kind="session", user_id=identity.user_id, username=identity.username,
        role=identity.role, credential_id=row["id"], csrf_token=csrf_token,
    )
    request[context.AUDIT_TARGET] = f"user:{identity.user_id}"
    detail: dict[str, Any] = request.get(context.AUDIT_DETAIL) or {}
    request[context.AUDIT_DETAIL] = {**detail, "session": row["id"]}
    return ok({"user": user_brief(user), "csrf_token": csrf_token, "expires_at": row["expires_at"]})


@route("POST", "/api/auth/logout", Access.ACCOUNT, "auth.logout", tags=("auth",),
       response={"type": "object", "properties": {"signed_out": {"type": "boolean"}}})
async def logout(request: web.Request) -> web.Response:
    """Sign out this browser: revokes the session and clears the cookie."""
    principal = context.principal(request)
    if principal.kind != "session":
        raise ApiError(400, "this route ends a browser session; a mobile device signs out "
                            "with POST /api/mobile/auth/logout")
    await sessions.revoke(context.pool(request), principal.credential_id)
    (await get_session(request)).invalidate()
    request[context.AUDIT_TARGET] = f"session:{principal.credential_id}"
    return ok({"signed_out": True})


@route("GET", "/api/auth/me", Access.VIEWER, "auth.me", tags=("auth",),
       response={"type": "object", "properties": {
           "user": {"type": "object"},
           "principal": {"type": "object"},
           "csrf_token": {"type": "string", "description": "cookie sessions only"},
           "session": {"type": "object", "description": "cookie sessions only"},
       }})
async def me(request: web.Request) -> web.Response:
    """Who is calling: the user, and how they authenticated (session, device, API key).

    For a cookie session it also returns the CSRF token, so a reloaded page can
    recover it without signing in again.
    """
    principal = context.principal(request)
    pool = context.pool(request)
    user = await users.get(pool, principal.user_id)
    if user is None:  # pragma: no cover - the principal lookup joined the row a moment ago
        raise ApiError(401, "authentication required")
    data: dict[str, Any] = {
        "user": user,
        "principal": {
            "kind": principal.kind,
            "id": principal.credential_id,
            "read_only": principal.read_only,
        },
    }
    if principal.kind == "session":
        session = await sessions.get_active(pool, principal.credential_id)
        data["csrf_token"] = principal.csrf_token
        if session is not None:
            data["session"] = {"id": session["id"], "expires_at": session["expires_at"]}
    return ok(data)


@route("PUT", "/api/auth/password", Access.ACCOUNT, "auth.password", body=PASSWORD,
       tags=("auth",), rate_limited=True, extra_statuses=(403, 429),
       response={"type": "object", "properties": {
           "password_changed_at": {"type": "string", "format": "date-time"},
           "revoked": {"type": "object", "description": "how many credentials were revoked"},
       }})
async def change_password(request: web.Request) -> web.Response:
    """Change your password. Every other session, every mobile device and every API key
    of yours is revoked; the session (or device) making this call stays signed in.

    A wrong current password counts toward the sign-in lockout.
    """
    principal = context.principal(request)
    body = context.body(request)
    current, new = body["current_password"], body["new_password"]
    request[context.AUDIT_TARGET] = f"user:{principal.user_id}"
    try:
        passwords.check_policy(new, principal.username)
    except passwords.PolicyError as exc:
        raise ApiError(422, f"new_password: {exc}") from None
    if new == current:
        raise ApiError(422, "new_password: must differ from the current password")
    await reauthenticate(request, principal.user_id, principal.username, password=current)
    new_hash = await passwords.hash_password(new)
    async with context.pool(request).acquire() as conn, conn.transaction():
        user = await users.update(conn, principal.user_id, {"password_hash": new_hash})
        if user is None:  # pragma: no cover - deleted while hashing
            raise ApiError(401, "authentication required")
        revoked = await users.revoke_credentials(
            conn, principal.user_id,
            keep_session=principal.credential_id if principal.kind == "session" else None,
            keep_device=principal.credential_id if principal.kind == "device" else None,
        )
    request[context.AUDIT_DETAIL] = {"revoked": revoked}
    return ok({"password_changed_at": user["password_changed_at"], "revoked": revoked})


ROUTES = [login, logout, me, change_password]
