"""Browser sessions: see and end your own; administrators see and end anyone's.

Revocation is immediate because the principal is looked up in the database on
every request: the next request carrying a revoked cookie is anonymous.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_session import get_session

from beeyard.server import context
from beeyard.server.auth.principal import Access, Principal
from beeyard.server.db import sessions as db
from beeyard.server.http.envelope import ApiError, ok
from beeyard.server.http.params import path_id
from beeyard.server.http.routing import route
from beeyard.shared.schema import Field, Schema

_SESSION_FIELDS: dict[str, Any] = {
    "id": {"type": "integer"},
    "user_id": {"type": "integer"},
    "ip": {"type": ["string", "null"]},
    "user_agent": {"type": ["string", "null"]},
    "created_at": {"type": "string", "format": "date-time"},
    "last_seen_at": {"type": "string", "format": "date-time",
                     "description": "updated at most once a minute"},
    "expires_at": {"type": "string", "format": "date-time"},
    "current": {"type": "boolean", "description": "the session making this request"},
}
_SESSION = {"type": "object", "properties": _SESSION_FIELDS}
_ADMIN_SESSION = {
    "type": "object",
    "properties": {**_SESSION_FIELDS, "username": {"type": "string"}},
}

ADMIN_LIST_QUERY = Schema("SessionListQuery", (
    Field("user_id", "int", required=False, min=1, max=2**63 - 1, doc="only this user's"),
    Field("limit", "int", required=False, default=100, min=1, max=500),
    Field("offset", "int", required=False, default=0, min=0, max=10**9),
))


def _view(row: dict[str, Any], principal: Principal) -> dict[str, Any]:
    current = principal.kind == "session" and row["id"] == principal.credential_id
    return {**row, "current": current}


async def _end(request: web.Request, row: dict[str, Any]) -> web.Response:
    """Answer a revocation; clear the cookie too when the caller ended its own session."""
    principal = context.principal(request)
    view = _view(row, principal)
    if view["current"]:
        (await get_session(request)).invalidate()
    request[context.AUDIT_TARGET] = f"session:{row['id']}"
    request[context.AUDIT_DETAIL] = {"user_id": row["user_id"]}
    return ok({**view, "revoked": True})


@route("GET", "/api/auth/sessions", Access.ACCOUNT, "sessions.list_own", tags=("sessions",),
       response={"type": "array", "items": _SESSION})
async def list_own(request: web.Request) -> web.Response:
    """List your active browser sessions; ``current`` marks this one."""
    principal = context.principal(request)
    rows = await db.list_for_user(context.pool(request), principal.user_id)
    return ok([_view(r, principal) for r in rows])


@route("DELETE", "/api/auth/sessions/{id}", Access.ACCOUNT, "sessions.revoke_own",
       tags=("sessions",), extra_statuses=(404,), response=_SESSION)
async def revoke_own(request: web.Request) -> web.Response:
    """End one of your sessions (ending the current one signs this browser out)."""
    principal = context.principal(request)
    session_id = path_id(request, "session")
    row = await db.revoke(context.pool(request), session_id, user_id=principal.user_id)
    if row is None:
        raise ApiError(404, f"session {session_id} not found among your active sessions")
    return await _end(request, row)


@route("DELETE", "/api/auth/sessions", Access.ACCOUNT, "sessions.revoke_others",
       tags=("sessions",),
       response={"type": "object", "properties": {"revoked": {"type": "integer"}}})
async def revoke_others(request: web.Request) -> web.Response:
    """Sign out everywhere else: end all your sessions except the current one."""
    principal = context.principal(request)
    keep = principal.credential_id if principal.kind == "session" else None
    count = await db.revoke_for_user(context.pool(request), principal.user_id, keep=keep)
    request[context.AUDIT_TARGET] = f"user:{principal.user_id}"
    request[context.AUDIT_DETAIL] = {"revoked": count}
    return ok({"revoked": count})


@route("GET", "/api/sessions", Access.ADMIN, "sessions.list", query=ADMIN_LIST_QUERY,
       tags=("sessions",), response={"type": "array", "items": _ADMIN_SESSION})
async def list_all(request: web.Request) -> web.Response:
    """List every user's active sessions (filter with ``user_id``), newest use first."""
    q = context.query(request)
    rows, total = await db.list_all(
        context.pool(request), user_id=q["user_id"], limit=q["limit"], offset=q["offset"]
    )
    principal = context.principal(request)
    return ok(
        [_view(r, principal) for r in rows],
        pagination={"limit": q["limit"], "offset": q["offset"], "total": total},
    )


@route("DELETE", "/api/sessions/{id}", Access.ADMIN, "sessions.revoke", tags=("sessions",),
       extra_statuses=(404,), response=_SESSION)
async def revoke_any(request: web.Request) -> web.Response:
    """End any user's session; their next request is anonymous."""
    session_id = path_id(request, "session")
    row = await db.revoke(context.pool(request), session_id)
    if row is None:
        raise ApiError(404, f"session {session_id} not found or no longer active")
    return await _end(request, row)


ROUTES = [list_own, revoke_others, revoke_own, list_all, revoke_any]
