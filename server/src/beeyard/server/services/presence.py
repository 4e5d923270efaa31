"""Presence: heartbeats to every connected agent, and last-seen times on disk.

This job does what one sweep does cheaper than a timer per agent: every
second it closes the links silent for longer than ``silence_limit``
(``hub/agents.py``; 9 s at the defaults), marking their servers offline at
once, pings the links whose heartbeat is due, and every
``TOUCH_EVERY`` seconds it writes ``last_seen_at`` of every online server in
one statement (not once per frame: 10,000 agents at 1 s would be 10,000
updates a second). The same statement returns each server's current token
digest: a link whose token was rotated or whose server was deleted elsewhere
(another replica, or straight in the database) is closed for good, so no
stale link outlives its credential by more than ``TOUCH_EVERY``.
"""

from __future__ import annotations

import time

from aiohttp import web

from beeyard.server import context
from beeyard.server.db import servers
from beeyard.server.hub.agents import HUB
from beeyard.server.services import Background

TOUCH_EVERY = 30.0


class Presence:
    def __init__(self) -> None:
        self._touched = time.monotonic()

    async def tick(self, app: web.Application) -> None:
        hub = app[HUB]
        hub.sweep()
        now = time.monotonic()
        for link in list(hub.links.values()):
            if now - link.last_ping >= hub.heartbeat:
                link.last_ping = now
                link.send("ping", {"ts": time.time()})
        if now - self._touched >= TOUCH_EVERY:
            self._touched = now
            links = dict(hub.links)
            current = await servers.touch(app[context.POOL], list(links))
            for server_id, link in links.items():
                if current.get(server_id) != link.token_digest and not link.rotating:
                    hub.spawn(link.close("revoked", "this run token is no longer valid; enroll "
                                         "the agent again", retry=False))


def job() -> Background:
    return Background("presence", 1.0, Presence().tick)
