"""Prometheus scrape endpoint: the latest live metrics of every server.

Meant for a Prometheus server with an API key (a read-scope key is enough),
e.g. ``authorization: {credentials: beeyard_...}`` in its scrape config. Answers
from memory plus one small query for the server names.
"""

from __future__ import annotations

from aiohttp import web

from beeyard.server import context
from beeyard.server.auth.principal import Access
from beeyard.server.db import fleet
from beeyard.server.http.routing import route
from beeyard.server.services import prometheus


@route("GET", "/api/metrics/prometheus", Access.VIEWER, "metrics.prometheus",
       tags=("metrics",))
async def scrape(request: web.Request) -> web.Response:
    """Latest metrics of every server in the Prometheus text format (0.0.4).

    Series are labelled ``server_id`` and ``name``; ``beeyard_server_online`` is 1
    for a connected agent. An offline server has only ``beeyard_server_online`` and
    its last-seen time: its last values would be stale. Authenticate with an API key
    (``Authorization: Bearer beeyard_...`` or ``X-API-Key``); the response is
    ``text/plain``, not JSON.
    """
    live = request.app[context.LIVE]
    servers = []
    for s in await fleet.names(context.pool(request)):
        online = live.online(s["id"])
        latest = live.latest(s["id"]) if online else None  # no stale values for the offline
        servers.append({
            "id": s["id"], "name": s["name"], "online": online,
            "last_seen": live.last_seen(s["id"]),
            "metrics": None if latest is None else latest[1],
        })
    return web.Response(body=prometheus.render(servers).encode(),
                        headers={"Content-Type": prometheus.CONTENT_TYPE})


ROUTES = [scrape]
