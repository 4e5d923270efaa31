"""Reading the audit trail (administrators only). Writing it is the audit
middleware's job, so that no write route can forget to."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from beeyard.server import context
from beeyard.server.auth.principal import Access
from beeyard.server.db import audit as db
from beeyard.server.http.envelope import ApiError, ok
from beeyard.server.http.routing import route
from beeyard.shared.schema import Field, Schema

_WHEN = "ISO 8601 date-time, e.g. 2026-05-17T12:34:56Z (UTC when no offset is given)"

QUERY = Schema("AuditLogQuery", (
    Field("actor", "str", required=False, min=1, max=256,
          doc="username (or the name a failed sign-in tried), case-insensitive"),
    Field("action", "str", required=False, min=1, max=128,
          doc="action prefix: 'users.' finds every user change, 'auth.login' every sign-in"),
    Field("outcome", "str", required=False, choices=("success", "failure", "denied")),
    Field("target", "str", required=False, min=1, max=256, doc="exact, e.g. user:7"),
    Field("ip", "str", required=False, min=1, max=64),
    Field("since", "str", required=False, max=64, doc=f"at or after; {_WHEN}"),
    Field("until", "str", required=False, max=64, doc=f"before; {_WHEN}"),
    Field("limit", "int", required=False, default=50, min=1, max=500),
    Field("offset", "int", required=False, default=0, min=0, max=10**9),
))

_ENTRY = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "at": {"type": "string", "format": "date-time"},
        "actor_user_id": {"type": ["integer", "null"]},
        "actor": {"type": ["string", "null"]},
        "principal_kind": {"type": ["string", "null"],
                           "enum": ["session", "device", "api_key", None]},
        "action": {"type": "string"},
        "target": {"type": ["string", "null"]},
        "ip": {"type": ["string", "null"]},
        "outcome": {"type": "string", "enum": ["success", "failure", "denied"]},
        "status": {"type": ["integer", "null"]},
        "request_id": {"type": ["string", "null"]},
        "detail": {"type": "object"},
    },
}


def parse_time(name: str, raw: str | None) -> dt.datetime | None:
    """An ISO 8601 instant; naive means UTC. A '+' of an offset that arrived
    unencoded in the query string has become a space, so that is read back."""
    if raw is None:
        return None
    text = raw.strip()
    for candidate in (text, text.replace(" ", "+")):
        try:
            when = dt.datetime.fromisoformat(candidate)
        except ValueError:
            continue
        if when.tzinfo is None:
            return when.replace(tzinfo=dt.UTC)
        try:  # in UTC, as the database will compare it; 9999-12-31T23:59-01:00 is year 10000
            return when.astimezone(dt.UTC)
        except OverflowError:
            raise ApiError(422, f"query parameter {name}: out of range; got {raw[:64]!r}") from None
    raise ApiError(422, f"query parameter {name}: must be an {_WHEN}; got {raw[:64]!r}")


@route("GET", "/api/audit-logs", Access.ADMIN, "audit.list", query=QUERY, tags=("audit",),
       response={"type": "array", "items": _ENTRY})
async def list_entries(request: web.Request) -> web.Response:
    """Search the audit log, newest first, with ``pagination`` {limit, offset, total}."""
    q = context.query(request)
    since, until = parse_time("since", q["since"]), parse_time("until", q["until"])
    if since is not None and until is not None and since >= until:
        raise ApiError(422, "query parameters since and until: since must be before until")
    rows, total = await db.search(
        context.pool(request),
        actor=q["actor"], action=q["action"], outcome=q["outcome"], target=q["target"],
        ip=q["ip"], since=since, until=until, limit=q["limit"], offset=q["offset"],
    )
    return ok(rows, pagination={"limit": q["limit"], "offset": q["offset"], "total": total})


ROUTES = [list_entries]
