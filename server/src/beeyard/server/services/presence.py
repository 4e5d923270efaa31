"""Presence: heartbeats to every connected agent, and last-seen times on disk.

This job does what one sweep does cheaper than a timer per agent: every second
each link is looked at once — closed if it has been silent for longer than
``silence_limit`` (``hub/agents.py``; 9 s at the defaults), its server marked
offline at once, or pinged if its heartbeat is overdue (``ping_due``: a link
whose samples flow is pinged on a sample's arrival instead). The links are
taken a tenth at a time, ten times a second, so that the work (and any pings
due) at 10,000 agents is ten small bursts rather than one that held every
other agent's frames back for tens of milliseconds. A round's
links are listed as it begins (links coming and going would otherwise shift
others out of their tenth); a link that connects meanwhile joins the next
round. Every ``TOUCH_EVERY`` seconds it writes ``last_seen_at`` of every online
server in one statement (not once per frame: 10,000 agents at 1 s would be
10,000 updates a second). The same statement returns each server's current
token digest: a link whose token was rotated or whose server was deleted
elsewhere (another replica, or straight in the database) is closed for good,
so no stale link outlives its credential by more than ``TOUCH_EVERY``.
"""

from __future__ import annotations

import time

from aiohttp import web

from beeyard.server import context
from beeyard.server.db import servers
from beeyard.server.hub.agents import HUB, Link
from beeyard.server.services import Background

TOUCH_EVERY = 30.0
SLICES = 10  # the links are visited a slice per tick, each link once per SLICES ticks
TICK = 1.0 / SLICES


class Presence:
    def __init__(self) -> None:
        self._touched = time.monotonic()
        self._slice = 0
        self._round: list[Link] = []  # the links as the round began: each visited once

    async def tick(self, app: web.Application) -> None:
        hub = app[HUB]
        if self._slice == 0:  # a new round; links that came meanwhile join the next one
            self._round = list(hub.links.values())
        links = [link for link in self._round[self._slice::SLICES]
                 if hub.links.get(link.server_id) is link]
        self._slice = (self._slice + 1) % SLICES
        hub.sweep(links)
        now = time.monotonic()
        for link in links:
            if now - link.last_ping >= link.ping_due and not link.closing:
                hub.ping(link, now)
        if now - self._touched >= TOUCH_EVERY:
            self._touched = now
            everyone = dict(hub.links)
            current = await servers.touch(app[context.POOL], list(everyone))
            for server_id, link in everyone.items():
                if current.get(server_id) != link.token_digest and not link.rotating:
                    hub.spawn(link.close("revoked", "this run token is no longer valid; enroll "
                                         "the agent again", retry=False))


def job() -> Background:
    return Background("presence", TICK, Presence().tick)
