"""``beeyard-agent run``: sample every interval, summarise every minute, keep the link up.

Two tasks on one event loop. The sampler runs whether or not the server is
reachable: live samples go out only while connected (they are worth nothing
late), but every sample feeds the minute summary, and every summary is in
the spool (fsync'd) before it is sent, so an outage loses no history.

SIGTERM or SIGINT: stop sampling, put the partial minute in the spool, send
it and ``bye {code: shutdown, retry: true}``, close, exit 0. A ``Fatal``
refusal from the server exits with ``EXIT_REFUSED`` and the reason.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from typing import Any

from beeyard.agent import sampling, websocket
from beeyard.agent.config import AgentConfig
from beeyard.agent.link import Fatal, Link
from beeyard.agent.sampling import PythonSampler
from beeyard.agent.spool import Spool
from beeyard.shared import wire

log = logging.getLogger("beeyard.agent")

EXIT_OK = 0
EXIT_REFUSED = 3  # the server refused this agent for good; a restart will not help
CHECK_EVERY = 60  # samples: one in this many is checked against the schema before sending


class Agent:
    def __init__(self, config: AgentConfig, host: dict[str, Any], spool: Spool) -> None:
        self.config = config
        self.spool = spool
        self.spool_changed = asyncio.Event()
        self.link = Link(config, host, spool, self.spool_changed)
        self.sampler: sampling.HostSampler = sampling.open_sampler()
        self.stop = asyncio.Event()
        self.samples = 0
        self._check_all = False
        self._due = 0.0
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _store(self, summary: dict[str, Any] | None) -> int | None:
        if summary is None:
            return None
        try:
            self.spool.put(summary)
        except (OSError, wire.WireError) as exc:
            log.error("cannot spool the summary of minute %s: %s", summary["minute"], exc)
            return None
        self.spool_changed.set()
        return int(summary["minute"])

    def tick(self, now: float | None = None) -> None:
        """One sample: collect and summarise, send live if connected. ``now``: the
        monotonic clock (the event loop's time), read here unless given."""
        if now is None:
            now = time.monotonic()
        self.samples += 1
        live = self.link.ws is not None
        # Checking every sample against its schema would cost ~0.18 ms of CPU a second, a
        # third of the agent's budget, to re-prove what the samplers guarantee (values
        # clamped to their bounds, names cut to their lengths, row counts capped). So the
        # first sample and one a minute are checked; the server checks every frame anyway.
        check = live and (self._check_all or self.samples % CHECK_EVERY == 1)
        try:
            # unchecked, the sampler frames it itself: one call fewer, cold
            data, done = self.sampler.sample(live and not check, None, now)
        except (OSError, ValueError) as exc:
            if isinstance(self.sampler, PythonSampler):
                raise  # its collectors fall back one by one: this is a bug
            self._fall_back(str(exc))
            return
        if done is not None:  # once a minute
            self._store(done)
        if not live:
            return
        if check:
            try:
                wire.decode(data)
            except wire.WireError as exc:  # our bug: say so, keep summarising
                log.error("a sample failed its own schema and was not sent: %s", exc)
                if not isinstance(self.sampler, PythonSampler):
                    self._fall_back(f"its sample failed the schema check: {exc}")
                elif not self._check_all:
                    self._check_all = True
                    log.error("from now on every sample is checked")
                return
            data = websocket.binary_frame(data)
        elif len(data) > wire.MAX_FRAME:
            return
        self.link.send_live(data, now)

    def _fall_back(self, reason: str) -> None:
        self.sampler = sampling.fall_back(self.sampler, reason)

    def _on_tick(self) -> None:
        """The sampling clock: a plain timer callback, not a task, because at one
        sample a second the event loop's own per-wake-up cost counts too. It reads the
        clock once for the sampler and the link. No check for a stop:
        ``run`` cancels the timer as soon as it resumes, and a tick before that is an
        ordinary sample that the final summary includes."""
        loop = self._loop  # not get_running_loop(): it makes a getpid system call
        assert loop is not None
        now = loop.time()
        try:
            self.tick(now)
        except Exception:  # a bug must not stop sampling: say where, go on
            log.exception("sampling failed")
        due = self._due + self.config.interval
        done = loop.time()
        if due <= done:  # suspended, overloaded or a slow tick: skip the missed ticks
            due = done + self.config.interval
        self._due = due
        self._timer = loop.call_at(due, self._on_tick)

    async def run(self) -> int:
        loop = self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        if len(self.spool):
            log.info("%d unacknowledged minute summaries in the spool", len(self.spool))
        # The frames this agent checks every minute or so, compiled now rather than in
        # the middle of its steady state (milliseconds each, the first time).
        wire.prepare("sample", "summary", "ack", "ping", "welcome", "rotate_token")
        # Everything built so far (modules, config, collectors) lives as long as the
        # process: keep it out of the garbage collector's full passes for good.
        gc.freeze()
        self._due = loop.time()
        self._timer = loop.call_soon(self._on_tick)
        link = asyncio.create_task(self.link.run(), name="link")
        stopper = asyncio.create_task(self.stop.wait(), name="stop")
        code = EXIT_OK
        try:
            await asyncio.wait([link, stopper], return_when=asyncio.FIRST_COMPLETED)
            if link.done() and not link.cancelled():
                exc = link.exception()
                if isinstance(exc, Fatal):
                    log.error("stopping: %s", exc)
                    code = EXIT_REFUSED
                elif exc is not None:
                    raise exc
            self.stop.set()
            self._timer.cancel()
            final = self._store(self.sampler.flush())
            if code == EXIT_OK:
                await self.link.shutdown(final)
                log.info("stopped")
        finally:
            self._timer.cancel()
            for task in (link, stopper):
                task.cancel()
            await asyncio.gather(link, stopper, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return code


async def run_agent(config: AgentConfig, spool: Spool) -> int:
    from beeyard.agent.hostfacts import host_facts

    agent = Agent(config, host_facts(), spool)
    log.info("beeyard-agent sampling every %g s (%s sampler); server %s; capabilities in the "
             "config: %s (local grants are added; see beeyard-agent grant)", config.interval,
             "Python" if isinstance(agent.sampler, PythonSampler) else "C", config.server,
             ", ".join(config.capabilities) or "none")
    return await agent.run()
