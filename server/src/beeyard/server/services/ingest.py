"""The ingest writer: minute summaries from the hub into metrics_minute, acked after commit.

The hub ``put``s each summary into a bounded queue; one writer takes what is
queued (up to ``BATCH``) and inserts it in one transaction with ``ON CONFLICT
DO NOTHING``, so a summary replayed from an agent's spool is harmless. Only
after the commit does each agent get ``ack {minutes}`` for its summaries in
the batch: an ack is a promise that the row is on disk.

If the database fails (a PostgreSQL restart), the writer keeps the batch and
retries with a growing pause; nothing is acked meanwhile. The queue then fills
and ``put`` blocks the agents' links (they stop reading), which leaves further
summaries in the agents' spools instead of our memory. Nothing acked is ever
lost, and nothing unacked is forgotten by the agent.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import time
from typing import Any

from aiohttp import web

from beeyard.server import context
from beeyard.server.db import summaries
from beeyard.server.hub.agents import HUB
from beeyard.server.services import Background

log = logging.getLogger("beeyard.server.ingest")

QUEUE = 20_000  # summaries waiting for the writer: ~2 minutes of 10,000 agents
BATCH = 250  # summaries per transaction: ~6 ms of the event loop each (2,000: ~50 ms)
MAX_ACK = 1440  # minutes per ack frame (the frame's bound)
LINGER = 1.0  # seconds the writer gathers summaries before a transaction
PARTITIONS_AHEAD = 2  # days of metrics_minute partitions kept created ahead of today

Item = tuple[int, dict[str, Any]]  # server id, summary body


class Ingest:
    def __init__(self, app: web.Application, maxsize: int | None = None,
                 batch: int = BATCH) -> None:
        self.app = app
        self.queue: asyncio.Queue[Item] = asyncio.Queue(QUEUE if maxsize is None else maxsize)
        self.batch = batch
        self._held: list[Item] = []  # taken from the queue, not yet committed
        self.written = 0  # rows new to the table
        self.batches = 0  # transactions committed
        self.acked = 0  # summaries acknowledged
        self.failures = 0  # failed batch attempts
        self.last_error: str | None = None
        self._days: set[dt.date] = set()  # partitions known to exist

    def offer(self, server_id: int, body: dict[str, Any]) -> bool:
        """Queue a summary if there is room; False when the queue is full."""
        try:
            self.queue.put_nowait((server_id, body))
        except asyncio.QueueFull:
            return False
        return True

    async def put(self, server_id: int, body: dict[str, Any]) -> None:
        """Queue a summary; waits while the queue is full (backpressure on the link)."""
        await self.queue.put((server_id, body))

    def _take(self, first: Item) -> list[Item]:
        items = [first]
        while len(items) < self.batch:
            try:
                items.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return items

    async def run(self, app: web.Application) -> None:
        """The writer loop; a failure inside is retried here, never escapes.

        Agents spread their summaries over the minute (``summary_spread``), so they
        arrive a few at a time: the writer gathers ``LINGER`` seconds' worth before a
        transaction (at 10,000 agents ~330 rows, not a transaction per agent, which
        cost ~0.5 ms of the server's CPU per summary in round trips). The acks are
        that much later; the summaries are safe in the agents' spools meanwhile."""
        while True:
            self._held = [await self.queue.get()]
            if self.queue.qsize() < self.batch - 1:
                await asyncio.sleep(LINGER)
            self._held = self._take(self._held[0])
            await self._write_until_done(self._held)
            self._held = []

    async def _write_until_done(self, items: list[Item]) -> None:
        pause = 0.5
        while True:
            try:
                await self.write(items)
                self.last_error = None
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("could not write %d summaries (retrying in %g s): %s",
                            len(items), pause, self.last_error)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def write(self, items: list[Item]) -> None:
        """One transaction for the batch, then the acks."""
        days = {summaries.minute_time(body["minute"]).date() for _, body in items}
        async with self.app[context.POOL].acquire() as conn:
            missing = days - self._days
            if missing:
                await summaries.ensure_partitions(conn, missing)
            async with conn.transaction():
                self.written += await summaries.insert(conn, items)
        self.batches += 1
        self._days |= missing
        self._ack(items)

    def _ack(self, items: list[Item]) -> None:
        hub = self.app[HUB]
        by_server: dict[int, list[int]] = collections.defaultdict(list)
        for server_id, body in items:
            by_server[server_id].append(body["minute"])
        for server_id, minutes in by_server.items():
            unique = sorted(set(minutes))
            for i in range(0, len(unique), MAX_ACK):
                if hub.send(server_id, "ack", {"minutes": unique[i:i + MAX_ACK]}):
                    self.acked += len(unique[i:i + MAX_ACK])
            # Not connected any more: the agent replays these after reconnecting,
            # and the replay is acked then (the rows are already there).

    async def flush(self, app: web.Application) -> None:
        """On stop: write what is queued, once, without retrying for long."""
        items, self._held = self._held, []  # cut short: written again, ON CONFLICT skips
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        if items:
            try:
                await asyncio.wait_for(self.write(items), 5.0)
            except Exception as exc:  # not acked: the agents replay them
                log.warning("could not write %d queued summaries on stop: %s", len(items), exc)

    def describe(self) -> dict[str, Any]:
        return {"queued": self.queue.qsize(), "written": self.written, "batches": self.batches,
                "acked": self.acked, "failures": self.failures, "last_error": self.last_error}


async def create_partitions(app: web.Application) -> None:
    """Create metrics_minute's partitions for today and the next days ahead of need."""
    today = dt.datetime.fromtimestamp(time.time(), dt.UTC).date()
    days = [today + dt.timedelta(days=d) for d in range(PARTITIONS_AHEAD + 1)]
    async with app[context.POOL].acquire() as conn:
        await summaries.ensure_partitions(conn, days)


def jobs(ingest: Ingest) -> tuple[Background, Background]:
    return (
        Background("ingest", 1.0, ingest.run, final=ingest.flush),
        Background("partitions", 3600.0, create_partitions),
    )
