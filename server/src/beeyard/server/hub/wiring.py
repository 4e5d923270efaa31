"""Wiring the agent link into the application: the hub, the ingest writer, presence.

One call from the app factory, so that ``app.py`` stays a table of contents.
"""

from __future__ import annotations

from aiohttp import web

from beeyard.server import context
from beeyard.server.api import enrollments
from beeyard.server.db import enrollments as enrollment_codes
from beeyard.server.http import routing
from beeyard.server.hub import agents
from beeyard.server.hub.agents import HUB, AgentHub
from beeyard.server.services import Background, background, ingest, presence
from beeyard.shared import wire

INGEST = web.AppKey("ingest", ingest.Ingest)


def install(app: web.Application) -> None:
    """Routes, hub and services. Call after the database's cleanup context: the writer
    needs the pool, and must flush before it closes (cleanup contexts unwind in reverse)."""
    routing.install(app, enrollments.ROUTES + agents.ROUTES)
    wire.compile_hot_frames()  # samples decoded in C where msgspec is installed
    hub = app[HUB] = AgentHub(app[context.LIVE], app[context.SETTINGS].agent_heartbeat)
    writer = app[INGEST] = hub.ingest = ingest.Ingest(app)
    app.on_shutdown.append(hub.shutdown)  # before the cleanup: agents told to come back
    app.cleanup_ctx.append(background(
        *ingest.jobs(writer), presence.job(), Background("enrollments", 3600.0, _purge_codes),
    ))


async def _purge_codes(app: web.Application) -> None:
    """Used and expired enrollment codes are kept listed for 30 days, then deleted."""
    await enrollment_codes.purge(app[context.POOL])
