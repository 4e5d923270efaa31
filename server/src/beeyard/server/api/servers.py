"""The fleet: list servers with their live state, show, edit, delete.

Records come from the database; "now" (online, last seen, latest metrics) comes
from the in-memory live state, never from a query, so the fleet page costs one
query however often it refreshes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from beeyard.server import context
from beeyard.server.auth.principal import Access
from beeyard.server.db import fleet as db
from beeyard.server.db import tags as tags_db
from beeyard.server.http.envelope import ApiError, ok
from beeyard.server.http.params import path_id
from beeyard.server.http.routing import route
from beeyard.server.hub.live import LiveState
from beeyard.shared.schema import Field, Schema

_ID = Field("id", "int", min=1, max=2**63 - 1)
_KEEP = 0  # group_id omitted

UPDATE = Schema("ServerUpdate", (
    Field("name", "str", required=False, min=1, max=100, doc="display name"),
    # Absent and null must differ here (keep the group / leave it), and validation folds
    # an absent optional field into its default: so 0, an id no group has, means "keep".
    Field("group_id", "int", required=False, nullable=True, min=0, max=2**63 - 1,
          default=_KEEP, doc="the server's group; null: no group; 0 or omitted: unchanged"),
    Field("tags", "list", required=False, max=100, items=_ID,
          doc="tag ids: the server's tags become exactly these"),
    Field("notes", "str", required=False, max=4000),
    Field("traffic_reset_day", "int", required=False, min=1, max=31,
          doc="day of the month a traffic cycle starts (UTC); past a short month's end "
              "it falls on the last day"),
))

_SERVER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "hostname": {"type": ["string", "null"]},
        "host": {"type": "object", "description": "host facts from the agent's hello"},
        "capabilities": {"type": "array", "items": {"type": "string"}},
        "agent_version": {"type": ["string", "null"]},
        "group": {"type": ["object", "null"]},
        "tags": {"type": "array", "items": {"type": "object"}},
        "notes": {"type": "string"},
        "traffic_reset_day": {"type": "integer"},
        "online": {"type": "boolean"},
        "last_seen": {"type": ["string", "null"], "format": "date-time"},
        "interval": {"type": ["number", "null"],
                     "description": "seconds between the agent's samples, once it connected"},
        "latest": {"type": ["object", "null"],
                   "description": "the newest live sample: ts (unix seconds), metrics, and "
                                  "values (its summary scalars, as in records)"},
    },
}


def with_live(server: dict[str, Any], live: LiveState) -> dict[str, Any]:
    """A database row joined with this process's live view of the server."""
    sid = server["id"]
    latest = live.latest(sid)
    seen = live.last_seen(sid)
    stored = server.pop("last_seen_at", None)
    last_seen = stored
    if seen is not None:
        heard = dt.datetime.fromtimestamp(seen, dt.UTC)
        last_seen = heard if stored is None or heard > stored else stored
    return {
        **server,
        "online": live.online(sid),
        "last_seen": last_seen,
        "interval": live.interval(sid),
        "latest": None if latest is None else {"ts": latest[0], "metrics": latest[1],
                                               "values": live.latest_values(sid)},
    }


async def fleet(request: web.Request) -> list[dict[str, Any]]:
    live = request.app[context.LIVE]
    return [with_live(s, live) for s in await db.list_all(context.pool(request))]


@route("GET", "/api/servers", Access.VIEWER, "servers.list", tags=("servers",),
       response={"type": "array", "items": _SERVER})
async def list_servers(request: web.Request) -> web.Response:
    """Every server with its group, tags, host facts, online state and latest metrics."""
    return ok(await fleet(request))


async def one(request: web.Request, server_id: int) -> dict[str, Any]:
    """The server's record with its live view, or 404."""
    server = await db.get(context.pool(request), server_id)
    if server is None:
        raise ApiError(404, f"server {server_id} not found")
    return with_live(server, request.app[context.LIVE])


@route("GET", "/api/servers/{id}", Access.VIEWER, "servers.get", tags=("servers",),
       response=_SERVER)
async def get_server(request: web.Request) -> web.Response:
    """One server, as in the list."""
    return ok(await one(request, path_id(request, "server")))


@route("PUT", "/api/servers/{id}", Access.ADMIN, "servers.update", body=UPDATE,
       tags=("servers",), response=_SERVER, extra_statuses=(404,))
async def update_server(request: web.Request) -> web.Response:
    """Rename a server, set its group, tags, notes or traffic reset day.

    Only the fields given change; ``tags`` replaces the server's tag set. An
    unknown group or tag id is a 422. Subscribers of the live stream get a
    ``server_updated`` event with the new values.
    """
    server_id = path_id(request, "server")
    body = context.body(request)
    changes = {k: body[k] for k in ("name", "notes", "traffic_reset_day") if body[k] is not None}
    if body["group_id"] != _KEEP:
        changes["group_id"] = body["group_id"]
    if "name" in changes:
        changes["name"] = changes["name"].strip()
        if not changes["name"]:
            raise ApiError(422, "name: must not be blank")
    tag_ids = body["tags"]
    try:
        server = await db.update(context.pool(request), server_id, changes, tag_ids)
    except db.UnknownGroup:
        raise ApiError(422, f"group_id: no group {changes.get('group_id')}") from None
    except tags_db.UnknownTags as exc:
        raise ApiError(422, f"tags: no tag {', '.join(map(str, exc.ids))}") from None
    if server is None:
        raise ApiError(404, f"server {server_id} not found")
    request[context.AUDIT_TARGET] = f"server:{server_id}"
    request[context.AUDIT_DETAIL] = {**changes, "tags": tag_ids} if tag_ids is not None else changes
    fields = {k: server[k] for k in ("name", "group", "tags", "notes", "traffic_reset_day")}
    request.app[context.LIVE].server_updated(server_id, fields)
    return ok(with_live(server, request.app[context.LIVE]))


@route("DELETE", "/api/servers/{id}", Access.ADMIN, "servers.delete", tags=("servers",),
       extra_statuses=(404,))
async def delete_server(request: web.Request) -> web.Response:
    """Delete a server with all its history; its agent is disconnected and its token stops
    working (the agent must be enrolled again to come back)."""
    server_id = path_id(request, "server")
    row = await db.delete(context.pool(request), server_id)
    if row is None:
        raise ApiError(404, f"server {server_id} not found")
    request[context.AUDIT_TARGET] = f"server:{server_id}"
    request[context.AUDIT_DETAIL] = {"name": row["name"]}
    # The token went with the row, so the agent cannot come back; remove() also has the
    # agent hub close a connected agent's link with a reason (bye revoked, no retry).
    request.app[context.LIVE].remove(server_id)
    return ok({"id": server_id, "deleted": True})


ROUTES = [list_servers, get_server, update_server, delete_server]
