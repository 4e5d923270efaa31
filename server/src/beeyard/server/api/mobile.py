"""Bearer sessions for mobile clients: sign in, refresh, sign out, and manage devices.

Each sign-in creates a device: one family of tokens. The access token
(``bya_...``, ``access_token_ttl``, 15 minutes by default) authenticates
REST calls as ``Authorization: Bearer``; the refresh token (``byr_...``)
only buys the next pair and is rotated on every use, its lifetime
(``refresh_token_ttl``, 30 days) counted again from each refresh, so a phone
in daily use stays signed in and one left in a drawer for a month does not.

Presenting a refresh token that was already exchanged is reuse: someone
copied it. That revokes the device and with it every token of the family,
including the pair the legitimate exchange handed out. Two concurrent
refreshes with the same token are treated the same way: exactly one wins,
the other is reuse. A correct client sends one refresh at a time and keeps
the new refresh token before it uses the new access token.

Bearer requests carry no CSRF token: the browser never attaches them on its
own, which is the attack CSRF protection is for.
"""

from __future__ import annotations

import contextlib
from typing import Any

import asyncpg
from aiohttp import web

from beeyard.server import context
from beeyard.server.api.auth import USER_BRIEF, user_brief
from beeyard.server.api.owned import listed_owner, revoke_owned
from beeyard.server.auth import tokens
from beeyard.server.auth.login import CREDENTIALS, authenticate
from beeyard.server.auth.principal import Access, Principal, Role
from beeyard.server.db import mobile as db
from beeyard.server.db import users
from beeyard.server.http.envelope import ApiError, ok
from beeyard.server.http.routing import route
from beeyard.shared.schema import Field, Schema

LOGIN = Schema("MobileLogin", (
    *CREDENTIALS,  # the same fields, bounds and docs as the web sign-in
    Field("device_name", "str", min=1, max=100, doc="shown in the device list, e.g. 'Ana's phone'"),
))

REFRESH = Schema("MobileRefresh", (
    Field("refresh_token", "str", min=1, max=200, secret=True,
          doc="the byr_ token from the last login or refresh; it works once"),
))

DEVICES_QUERY = Schema("MobileDevicesQuery", (
    Field("all", "bool", required=False, default=False,
          doc="admins only: list every user's signed-in devices, with their owner"),
))

_TOKENS = {
    "type": "object",
    "properties": {
        "access_token": {"type": "string", "description": "bya_...; send as Authorization: Bearer"},
        "refresh_token": {"type": "string", "description": "byr_...; works once"},
        "token_type": {"type": "string", "enum": ["Bearer"]},
        "expires_in": {"type": "integer", "description": "seconds the access token lives"},
        "refresh_expires_in": {"type": "integer"},
        "device_id": {"type": "integer"},
        "user": USER_BRIEF,
    },
}

_DEVICE = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "device_name": {"type": "string"},
        "ip": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "last_seen_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": "string", "format": "date-time",
                       "description": "when the sign-in lapses unless the device refreshes"},
        "current": {"type": "boolean", "description": "the device making this request"},
    },
}

_REFUSED = {
    db.Reason.INVALID: "invalid refresh token; sign in again",
    db.Reason.EXPIRED: "refresh token expired; sign in again",
    db.Reason.SIGNED_OUT: "this device has been signed out; sign in again",
    db.Reason.REUSED: (
        "refresh token was already used, so it may have been copied: this device has been "
        "signed out; sign in again"
    ),
}


def _new_pair(request: web.Request) -> tuple[str, str, db.Pair]:
    settings = context.settings(request)
    access, access_digest = tokens.new_secret(tokens.ACCESS_TOKEN_PREFIX)
    refresh, refresh_digest = tokens.new_secret(tokens.REFRESH_TOKEN_PREFIX)
    pair = db.Pair(access_digest, refresh_digest,
                   settings.access_token_ttl, settings.refresh_token_ttl)
    return access, refresh, pair


def _tokens(
    access: str, refresh: str, pair: db.Pair, device_id: int, user: dict[str, Any]
) -> dict[str, Any]:
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": pair.access_ttl,
        "refresh_expires_in": pair.refresh_ttl,
        "device_id": device_id,
        "user": user,
    }


def _as_device(request: web.Request, device_id: int, user_id: int, username: str,
               role: str) -> None:
    """Name the new device as the caller, so the audit record says who signed in."""
    request[context.PRINCIPAL] = Principal(
        kind="device", user_id=user_id, username=username, role=Role(role),
        credential_id=device_id,
    )


@route("POST", "/api/mobile/auth/login", Access.PUBLIC, "mobile.login", body=LOGIN,
       tags=("mobile",), response=_TOKENS, rate_limited=True, extra_statuses=(401, 429))
async def login(request: web.Request) -> web.Response:
    """Sign in a mobile device: returns a short-lived access token and a refresh token.

    The same credential check as the web login, sharing its per-IP and
    per-account lockout: failures here and there add up. With 2FA on, a
    missing ``totp_code`` answers 401 with ``"totp_required": true``.
    """
    body = context.body(request)
    name = body["device_name"].strip()
    if not name:
        raise ApiError(422, "device_name: must not be blank")
    # The audit record names who tried, not whatever credential the request also carried.
    request[context.PRINCIPAL] = None  # type: ignore[misc]
    who = await authenticate(request, body["username"], body["password"], body["totp_code"])
    pool = context.pool(request)
    access, refresh, pair = _new_pair(request)
    user = await users.get(pool, who.user_id)
    device = None
    if user is not None:
        # The user may be deleted in the instant since the password check.
        with contextlib.suppress(asyncpg.ForeignKeyViolationError):
            device = await db.create_device(pool, who.user_id, name,
                                            context.client_ip(request), pair)
    if user is None or device is None:
        raise ApiError(401, "invalid username or password")
    _as_device(request, device["id"], who.user_id, who.username, who.role.value)
    request[context.AUDIT_TARGET] = f"device:{device['id']}"
    request[context.AUDIT_DETAIL] = {**request.get(context.AUDIT_DETAIL, {}), "device_name": name}
    return ok(_tokens(access, refresh, pair, device["id"], user_brief(user)))


@route("POST", "/api/mobile/auth/refresh", Access.PUBLIC, "mobile.refresh", body=REFRESH,
       tags=("mobile",), response=_TOKENS, extra_statuses=(401,))
async def refresh(request: web.Request) -> web.Response:
    """Exchange a refresh token for a new access + refresh pair; the old one stops working.

    Presenting a refresh token a second time signs the device out entirely
    (every token it holds), since only a copy could be presented twice.
    """
    presented = context.body(request)["refresh_token"].strip()
    if not presented.startswith(tokens.REFRESH_TOKEN_PREFIX):
        raise ApiError(
            401, f"not a refresh token (they start with {tokens.REFRESH_TOKEN_PREFIX}); "
            "sign in again",
        )
    access, new_refresh, pair = _new_pair(request)
    result = await db.refresh(
        context.pool(request), tokens.digest(presented), pair, context.client_ip(request)
    )
    if isinstance(result, db.Refused):
        if result.device_id is not None:
            request[context.AUDIT_TARGET] = f"device:{result.device_id}"
        if result.username is not None:
            request[context.AUDIT_ACTOR] = result.username
        request[context.AUDIT_DETAIL] = {"reason": result.reason.value}
        raise ApiError(401, _REFUSED[result.reason])
    _as_device(request, result.device_id, result.user_id, result.username, result.role)
    request[context.AUDIT_TARGET] = f"device:{result.device_id}"
    user = {"id": result.user_id, "username": result.username, "role": result.role,
            "totp_enabled": result.totp_enabled}
    return ok(_tokens(access, new_refresh, pair, result.device_id, user))


@route("POST", "/api/mobile/auth/logout", Access.ACCOUNT, "mobile.logout", tags=("mobile",),
       extra_statuses=(400,))
async def logout(request: web.Request) -> web.Response:
    """Sign out the device whose access token makes this request (all its tokens end now)."""
    principal = context.principal(request)
    if principal.kind != "device":
        raise ApiError(
            400, "this signs out a mobile device and needs its Bearer access token; "
            "a browser signs out with POST /api/auth/logout",
        )
    request[context.AUDIT_TARGET] = f"device:{principal.credential_id}"
    row = await db.revoke_device(context.pool(request), principal.credential_id, principal.user_id)
    if row is None:  # pragma: no cover - revoked between the auth check and here
        raise ApiError(401, "this device is already signed out")
    return ok({"id": row["id"], "revoked_at": row["revoked_at"]})


@route("GET", "/api/mobile/auth/devices", Access.ACCOUNT, "mobile.devices.list",
       query=DEVICES_QUERY, tags=("mobile",), response={"type": "array", "items": _DEVICE})
async def list_devices(request: web.Request) -> web.Response:
    """List your signed-in mobile devices; ``current`` marks the one asking.

    Admins may pass ``all=true`` to see every user's devices with their owner;
    anyone else asking for ``all`` is refused with 403.
    """
    principal = context.principal(request)
    owner = listed_owner(request, "devices")
    everyone = owner is None
    rows = await db.list_devices(context.pool(request), owner)
    current = principal.credential_id if principal.kind == "device" else None
    out = []
    for r in rows:
        item = {k: r[k] for k in
                ("id", "device_name", "ip", "created_at", "last_seen_at", "expires_at")}
        item["current"] = r["id"] == current
        if everyone:
            item["user"] = {"id": r["user_id"], "username": r["username"]}
        out.append(item)
    return ok(out)


@route("DELETE", "/api/mobile/auth/devices/{id}", Access.ACCOUNT, "mobile.devices.delete",
       tags=("mobile",), extra_statuses=(404,))
async def delete_device(request: web.Request) -> web.Response:
    """Sign out a device: its access and refresh tokens stop working immediately.

    Your own devices only, except that an admin may sign out anyone's (a lost
    phone must be stoppable without deleting its owner). Someone else's
    device answers 404 exactly as one that does not exist.
    """
    return await revoke_owned(request, what="device", target="device",
                              revoke=db.revoke_device, describe=("device_name",))


ROUTES = [login, refresh, logout, list_devices, delete_device]
