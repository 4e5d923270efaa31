"""API keys for automation: list, create (shown once), revoke.

Every route here is ``Access.ACCOUNT``: a person signed in (browser session or
mobile device) manages keys; an API key itself is refused, so a leaked key
cannot mint more keys or keep itself alive.

A key acts as its owner with the owner's *current* role, looked up on every
request (``db/principals.py``), so demoting, disabling or deleting the owner
changes or ends what the key can do at once. ``scope`` narrows further: a
``read`` key may only call GET routes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from beeyard.server import context
from beeyard.server.api.owned import listed_owner, revoke_owned
from beeyard.server.auth import tokens
from beeyard.server.auth.principal import Access
from beeyard.server.db import api_keys as db
from beeyard.server.http.envelope import ApiError, ok
from beeyard.server.http.routing import route
from beeyard.shared.schema import Field, Schema

PREFIX_LENGTH = 8  # characters after "beeyard_" kept for display
MAX_DAYS = 3650

_KEY_FIELDS: dict[str, Any] = {
    "id": {"type": "integer"},
    "name": {"type": "string"},
    "prefix": {"type": "string", "description": "first 8 characters after beeyard_"},
    "scope": {"type": "string", "enum": ["read", "full"]},
    "created_at": {"type": "string", "format": "date-time"},
    "expires_at": {"type": ["string", "null"], "format": "date-time"},
    "last_used_at": {"type": ["string", "null"], "format": "date-time"},
    "expired": {"type": "boolean"},
}
_KEY = {"type": "object", "properties": _KEY_FIELDS}
_CREATED = {
    "type": "object",
    "properties": {
        **_KEY_FIELDS,
        "key": {"type": "string", "description": "the key itself; returned only this once"},
    },
}

LIST_QUERY = Schema("ApiKeyListQuery", (
    Field("all", "bool", required=False, default=False,
          doc="admins only: list every user's keys, with their owner"),
))

CREATE = Schema("ApiKeyCreate", (
    Field("name", "str", min=1, max=100, doc="what the key is for, e.g. 'backup script'"),
    Field("scope", "str", required=False, default="full", choices=("read", "full"),
          doc="read: GET requests only; full: everything the owner's role allows"),
    Field("expires_at", "str", required=False, nullable=True, max=64,
          doc="ISO 8601 time the key stops working (UTC when no offset is given)"),
    Field("expires_in_days", "int", required=False, nullable=True, min=1, max=MAX_DAYS,
          doc="alternative to expires_at: days from now"),
))


def _public(row: dict[str, Any], *, with_owner: bool) -> dict[str, Any]:
    out = {k: row[k] for k in
           ("id", "name", "prefix", "scope", "created_at", "expires_at", "last_used_at", "expired")}
    if with_owner:
        out["user"] = {"id": row["user_id"], "username": row["username"]}
    return out


def _expiry(body: dict[str, Any]) -> dt.datetime | None:
    """The absolute expiry the body asks for, or None for a key that never expires."""
    at, days = body["expires_at"], body["expires_in_days"]
    if at is not None and days is not None:
        raise ApiError(422, "give expires_at or expires_in_days, not both")
    now = dt.datetime.now(dt.UTC)
    if days is not None:
        return now + dt.timedelta(days=days)
    if at is None:
        return None
    try:
        when = dt.datetime.fromisoformat(at.strip())
    except ValueError:
        raise ApiError(
            422, "expires_at: must be an ISO 8601 time such as 2030-01-31T00:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if when <= now:
        raise ApiError(422, "expires_at: must be in the future")
    if when > now + dt.timedelta(days=MAX_DAYS):
        raise ApiError(422, f"expires_at: must be at most {MAX_DAYS} days from now")
    return when


@route("GET", "/api/auth/api-keys", Access.ACCOUNT, "api_keys.list", query=LIST_QUERY,
       tags=("api-keys",), response={"type": "array", "items": _KEY})
async def list_keys(request: web.Request) -> web.Response:
    """List your API keys (never the key itself, only its 8-character prefix).

    Admins may pass ``all=true`` to see every user's active keys with their
    owner, so they can find and revoke a key that leaked; anyone else asking
    for ``all`` is refused with 403.
    """
    owner = listed_owner(request, "API keys")
    rows = await db.list_for(context.pool(request), owner)
    return ok([_public(r, with_owner=owner is None) for r in rows])


@route("POST", "/api/auth/api-keys", Access.ACCOUNT, "api_keys.create", body=CREATE,
       status=201, tags=("api-keys",), response=_CREATED, extra_statuses=(409,))
async def create_key(request: web.Request) -> web.Response:
    """Create an API key; the response holds the key, shown this once and never again.

    The key acts as you, with your role at the time of each request; a
    ``read`` key is refused on anything but GET. Use it as ``X-API-Key: <key>``
    or ``Authorization: Bearer <key>``.
    """
    principal = context.principal(request)
    body = context.body(request)
    name = body["name"].strip()
    if not name:
        raise ApiError(422, "name: must not be blank")
    expires_at = _expiry(body)
    plaintext, digest = tokens.new_secret(tokens.API_KEY_PREFIX)
    prefix = plaintext[len(tokens.API_KEY_PREFIX):][:PREFIX_LENGTH]
    try:
        row = await db.create(
            context.pool(request), user_id=principal.user_id, name=name, prefix=prefix,
            digest=digest, scope=body["scope"], expires_at=expires_at,
        )
    except db.NameTaken:
        raise ApiError(409, f"you already have an API key named {name!r}") from None
    except db.NoSuchUser:
        raise ApiError(401, "authentication required") from None
    except db.TooMany:
        raise ApiError(
            409, f"you have {db.MAX_ACTIVE_PER_USER} API keys; revoke one before adding another"
        ) from None
    request[context.AUDIT_TARGET] = f"api_key:{row['id']}"
    request[context.AUDIT_DETAIL] = {
        "name": name, "prefix": prefix, "scope": row["scope"],
        "expires_at": None if expires_at is None else expires_at.isoformat(),
    }
    return ok({**_public(row, with_owner=False), "key": plaintext}, status=201)


@route("DELETE", "/api/auth/api-keys/{id}", Access.ACCOUNT, "api_keys.delete",
       tags=("api-keys",), extra_statuses=(404,))
async def delete_key(request: web.Request) -> web.Response:
    """Revoke an API key; it stops working with the very next request.

    Your own keys only, except that an admin may revoke anyone's (a leaked key
    must be stoppable without deleting its owner). Someone else's key answers
    404 exactly as a key that does not exist, so ids reveal nothing.
    """
    return await revoke_owned(request, what="API key", target="api_key", revoke=db.revoke,
                              describe=("name", "prefix"))


ROUTES = [list_keys, create_key, delete_key]
