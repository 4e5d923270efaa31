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
round. Each round also writes ``last_seen_at`` of one of ``TOUCH_SHARES``
shares of the online servers (by id) in one statement, so each server's is
written once every ``TOUCH_SHARES`` rounds (30 s): not once per frame (10,000
agents at 1 s would be 10,000 updates a second), and not all at once either (at
10,000 agents one statement for all took PostgreSQL 70-120 ms of a core every
30 s, and its 10,000 rows were decoded in the event loop). The same statement
returns each server's current token digest: a link whose token was rotated or
whose server was deleted elsewhere (another replica, or straight in the
database) is closed for good, so no stale link outlives its credential by more
than a cycle of shares.
"""

from __future__ import annotations

import time

from aiohttp import web

from beeyard.server import context
from beeyard.server.db import servers
from beeyard.server.hub.agents import HUB, Link
from beeyard.server.services import Background

SLICES = 10  # the links are visited a slice per tick, each link once per SLICES ticks
TICK = 1.0 / SLICES
TOUCH_SHARES = 30  # last_seen_at: a share of the servers per round (1 s), each once in 30


class Presence:
    def __init__(self) -> None:
        self._slice = 0
        self._share = 0  # the share of servers whose last_seen_at the next round writes
        self._round: list[Link] = []  # the links as the round began: each visited once

    async def tick(self, app: web.Application) -> None:
        hub = app[HUB]
        touching: list[Link] = []
        if self._slice == 0:  # a new round; links that came meanwhile join the next one
            self._round = list(hub.links.values())
            share, self._share = self._share, (self._share + 1) % TOUCH_SHARES
            touching = [link for link in self._round if link.server_id % TOUCH_SHARES == share]
        links = [link for link in self._round[self._slice::SLICES]
                 if hub.links.get(link.server_id) is link]
        self._slice = (self._slice + 1) % SLICES
        hub.sweep(links)
        now = time.monotonic()
        for link in links:
            if now - link.last_ping >= link.ping_due and not link.closing:
                hub.ping(link, now)
        if touching:
            await self._touch(app, touching)

    async def _touch(self, app: web.Application, links: list[Link]) -> None:
        """Write these servers' last_seen_at; close a link whose credential changed."""
        hub = app[HUB]
        current = await servers.touch(app[context.POOL], [link.server_id for link in links])
        for link in links:
            if (hub.links.get(link.server_id) is link and not link.rotating
                    and current.get(link.server_id) != link.token_digest):
                hub.spawn(link.close("revoked", "this run token is no longer valid; enroll "
                                     "the agent again", retry=False))


def job() -> Background:
    return Background("presence", TICK, Presence().tick)
