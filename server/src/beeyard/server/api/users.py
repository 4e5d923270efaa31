"""User accounts, managed by administrators.

Two rules keep an installation manageable: an administrator cannot lock
themself out (delete, demote or disable their own account), and the last
active administrator cannot be removed by anyone. Both are checked under one
transaction-scoped lock, so two concurrent changes cannot together leave no admin.

Reading is open to any admin principal; creating users and every change to them
is ``Access.ADMIN_INTERACTIVE``, an admin in person and never an API key, so a
leaked key cannot make itself an admin account or reset someone's password or
2FA. An admin's own password and 2FA change only through the routes that ask
for the password again (a stolen session alone must not do it).

Changes take effect on the user's next request: the principal is read from the
database every time. Disabling a user or resetting their password also revokes
every credential they hold, so re-enabling does not revive an old session.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from beeyard.server import context
from beeyard.server.auth import passwords
from beeyard.server.auth.principal import Access, Role
from beeyard.server.auth.usernames import USERNAME  # one rule, shared with sign-in
from beeyard.server.db import users as db
from beeyard.server.http.envelope import ApiError, ok
from beeyard.server.http.params import path_id
from beeyard.server.http.routing import route
from beeyard.shared.schema import Field, Schema

ROLES = tuple(r.value for r in Role)
_POLICY_DOC = (
    "at least 10 characters (a passphrase of a few words is ideal), at most 1024, not the "
    "username, more than two distinct characters"
)

_USER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "username": {"type": "string"},
        "role": {"type": "string", "enum": list(ROLES)},
        "disabled": {"type": "boolean"},
        "totp_enabled": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "password_changed_at": {"type": "string", "format": "date-time"},
        "last_login_at": {"type": ["string", "null"], "format": "date-time"},
    },
}

CREATE = Schema("UserCreate", (
    Field("username", "str", min=1, max=64,
          doc="1–64 characters from A–Z a–z 0–9 . _ -; unique regardless of case"),
    Field("password", "str", min=1, max=passwords.MAX_LENGTH, secret=True, doc=_POLICY_DOC),
    Field("role", "str", required=False, default="viewer", choices=ROLES),
))

UPDATE = Schema("UserUpdate", (
    Field("role", "str", required=False, choices=ROLES),
    Field("disabled", "bool", required=False,
          doc="a disabled user cannot sign in; their sessions, devices and keys are revoked"),
    Field("password", "str", required=False, min=1, max=passwords.MAX_LENGTH, secret=True,
          doc="reset the password (revokes the user's sessions, devices and keys). "
              "For your own, use PUT /api/auth/password. " + _POLICY_DOC),
    Field("disable_totp", "bool", required=False,
          doc="true turns off the user's 2FA, for someone who lost their authenticator "
              "and recovery codes. For your own, use POST /api/auth/2fa/disable"),
), doc="Only the fields given are changed.")


def _check_username(name: str) -> str:
    if not USERNAME.fullmatch(name):
        raise ApiError(
            422, "username: must be 1–64 characters, each a letter, a digit, '.', '_' or '-'"
        )
    return name


async def _hash_new(password: str, username: str) -> str:
    try:
        passwords.check_policy(password, username)
    except passwords.PolicyError as exc:
        raise ApiError(422, f"password: {exc}") from None
    return await passwords.hash_password(password)


@route("GET", "/api/users", Access.ADMIN, "users.list", tags=("users",),
       response={"type": "array", "items": _USER})
async def list_users(request: web.Request) -> web.Response:
    """List every user (never a password hash or a 2FA secret)."""
    return ok(await db.list_all(context.pool(request)))


@route("POST", "/api/users", Access.ADMIN_INTERACTIVE, "users.create", body=CREATE, tags=("users",),
       status=201, extra_statuses=(409,), response=_USER)
async def create_user(request: web.Request) -> web.Response:
    """Create a user. The name is unique regardless of case (409 if taken)."""
    body = context.body(request)
    username = _check_username(body["username"])
    password_hash = await _hash_new(body["password"], username)
    try:
        user = await db.create(context.pool(request), username, password_hash, body["role"])
    except asyncpg.UniqueViolationError:
        raise ApiError(409, f"a user named {username!r} already exists") from None
    request[context.AUDIT_TARGET] = f"user:{user['id']}"
    request[context.AUDIT_DETAIL] = {"username": username, "role": body["role"]}
    return ok(user, status=201)


@route("GET", "/api/users/{id}", Access.ADMIN, "users.get", tags=("users",),
       extra_statuses=(404,), response=_USER)
async def get_user(request: web.Request) -> web.Response:
    """One user."""
    user_id = path_id(request, "user")
    user = await db.get(context.pool(request), user_id)
    if user is None:
        raise ApiError(404, f"user {user_id} not found")
    return ok(user)


@route("PUT", "/api/users/{id}", Access.ADMIN_INTERACTIVE, "users.update", body=UPDATE,
       tags=("users",), extra_statuses=(400, 404, 409), response=_USER)
async def update_user(request: web.Request) -> web.Response:
    """Change a user's role, disable or enable them, reset their password, or turn off
    their 2FA. Only the fields given change."""
    user_id = path_id(request, "user")
    me = context.principal(request)
    body = context.body(request)
    request[context.AUDIT_TARGET] = f"user:{user_id}"
    role, disabled = body["role"], body["disabled"]
    password, disable_totp = body["password"], body["disable_totp"]
    if role is None and disabled is None and password is None and not disable_totp:
        raise ApiError(422, "nothing to change: give role, disabled, password or disable_totp")
    if user_id == me.user_id:
        if role is not None and role != Role.ADMIN:
            raise ApiError(409, "you cannot change your own role; another admin must do it")
        if disabled:
            raise ApiError(409, "you cannot disable your own account")
        if password is not None:
            raise ApiError(400, "change your own password with PUT /api/auth/password, "
                                "which asks for the current one")
        if disable_totp:
            raise ApiError(400, "turn off your own 2FA with POST /api/auth/2fa/disable, "
                                "which asks for your password or a code")
    pool = context.pool(request)
    target = await db.get(pool, user_id)
    if target is None:
        raise ApiError(404, f"user {user_id} not found")
    changes: dict[str, Any] = {}
    if role is not None:
        changes["role"] = role
    if disabled is not None:
        changes["disabled"] = disabled
    if password is not None:
        changes["password_hash"] = await _hash_new(password, target["username"])
    revoked = None
    async with pool.acquire() as conn, conn.transaction():
        await db.lock_admin_set(conn)
        current = await db.get(conn, user_id)
        if current is None:
            raise ApiError(404, f"user {user_id} not found")
        loses_admin = (role is not None and role != Role.ADMIN) or disabled is True
        if (current["role"] == Role.ADMIN and not current["disabled"] and loses_admin
                and await db.active_admins(conn) <= 1):
            raise ApiError(409, f"{current['username']!r} is the last active admin; "
                                "make another user admin first")
        if changes:
            await db.update(conn, user_id, changes)
        if disable_totp:
            await db.disable_totp(conn, user_id)
        if password is not None or (disabled and not current["disabled"]):
            revoked = await db.revoke_credentials(conn, user_id)
        user = await db.get(conn, user_id)
    changed = [k for k in ("role", "disabled", "password") if body[k] is not None]
    detail: dict[str, Any] = {"changed": [*changed, *(["disable_totp"] if disable_totp else [])]}
    if role is not None:
        detail["role"] = {"from": current["role"], "to": role}
    if revoked is not None:
        detail["revoked"] = revoked
    request[context.AUDIT_DETAIL] = detail
    return ok(user)


@route("DELETE", "/api/users/{id}", Access.ADMIN_INTERACTIVE, "users.delete", tags=("users",),
       extra_statuses=(404, 409), response=_USER)
async def delete_user(request: web.Request) -> web.Response:
    """Delete a user and every credential they hold; returns the deleted user."""
    user_id = path_id(request, "user")
    request[context.AUDIT_TARGET] = f"user:{user_id}"
    if user_id == context.principal(request).user_id:
        raise ApiError(409, "you cannot delete your own account")
    async with context.pool(request).acquire() as conn, conn.transaction():
        await db.lock_admin_set(conn)
        current = await db.get(conn, user_id)
        if current is None:
            raise ApiError(404, f"user {user_id} not found")
        if (current["role"] == Role.ADMIN and not current["disabled"]
                and await db.active_admins(conn) <= 1):
            raise ApiError(409, f"{current['username']!r} is the last active admin; "
                                "make another user admin first")
        deleted = await db.delete(conn, user_id)
    request[context.AUDIT_DETAIL] = {"username": current["username"], "role": current["role"]}
    return ok(deleted)


ROUTES = [list_users, create_user, get_user, update_user, delete_user]
