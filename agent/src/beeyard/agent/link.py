"""The agent's one outbound WebSocket to the server: connect, hello, stream, reconnect.

Lifecycle of one connection (a *session*):

1. Upgrade ``{server}/api/agent/ws`` with ``Authorization: Bearer <token>``,
   the token read from its file each time (so a rotated or re-enrolled token
   is used by the next connection). HTTP 401 or 403 means this token will
   never be accepted: the agent stops retrying and exits with the reason.
2. Send ``hello``; wait for ``welcome``. A ``bye`` with ``retry=false``, or a
   welcome of an incompatible protocol, also stops the agent for good.
3. Stream: live samples (sent by the daemon through ``send_live``), spooled
   minute summaries (oldest first, at ``spool.replay_rate`` per second),
   ``ping`` every heartbeat interval — unless samples go out more often than
   heartbeats, when a sample sent within the last heartbeat stands in for the
   ping (the server counts any frame as a sign of life, and its own pings
   keep telling the agent that the link is up). Every received frame goes through
   ``wire.decode``; a bad one is logged (rate-limited) and ignored.
   No frame for three heartbeat intervals means the link is dead.
   The pings and the dead-link check are one function (``_beat``), run with
   the first live sample sent after a ping falls due and, as a fallback, by one
   timer — not a task and a timeout per received frame: at one sample a second
   the agent runs cold, and every extra wake-up of the process costs about as
   much as a sample.
4. On any loss: reconnect after a backoff delay (``backoff``), reset only
   after a link that stayed up for ``STABLE_LINK`` seconds.

``Fatal`` is the only exception that leaves ``run``: the daemon exits with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from beeyard.agent import __version__, websocket
from beeyard.agent.backoff import Backoff
from beeyard.agent.config import AgentConfig
from beeyard.agent.spool import Spool
from beeyard.agent.token import TokenError, read_token, write_token
from beeyard.shared import wire

if TYPE_CHECKING:  # imported when hello is built: the grants code is not needed before
    from beeyard.agent.grants import CapabilityWatch
    from beeyard.agent.operations import Dispatcher

log = logging.getLogger("beeyard.agent.link")

CONNECT_TIMEOUT = 15.0
WELCOME_TIMEOUT = 30.0
STABLE_LINK = 30.0  # seconds up before the backoff starts again from 1 s
DEAD_AFTER = 3  # heartbeat intervals without any frame
LIVE_BUFFER_LIMIT = 256 * 1024  # bytes queued before live samples are dropped
CAPABILITIES_EVERY = 2.0  # seconds between checks for grants given, revoked or expired
_OPERATION_FRAMES = frozenset({"request", "data", "credit", "signal", "cancel"})


class Fatal(Exception):
    """The server refused this agent for good (revoked or unknown token, incompatible
    protocol, bye with retry=false): retrying cannot help, a person must act."""


class LinkLost(Exception):
    """This session is over; the link loop reconnects."""


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _pack_unchecked(frame_type: str, body: dict[str, Any]) -> bytes:
    """A ``ping`` or ``pong`` packed in ``wire.encode``'s layout without its schema
    check (~50 µs cold, twice every heartbeat): their one field is a float taken
    from ``time.time()`` or from a ping that ``wire.decode`` has checked."""
    data: bytes = msgpack.packb({"t": frame_type, "b": body}, use_bin_type=True)
    return data


# A ping as wire.encode packs it (the server's layout) is these bytes, then its ts as a
# msgpack float64 (8 bytes, big-endian); the pong that answers it is the same with "pong".
_PING_HEAD: bytes = msgpack.packb({"t": "ping", "b": {"ts": 0.5}}, use_bin_type=True)[:-8]
_PONG_HEAD: bytes = msgpack.packb({"t": "pong", "b": {"ts": 0.5}}, use_bin_type=True)[:-8]
_PING_SIZE = len(_PING_HEAD) + 8
_TS = struct.Struct(">d")


def pong_for(data: bytes) -> bytes | None:
    """The ``pong`` for a ``ping`` frame in ``wire.encode``'s layout, or None for any
    other frame (which then goes through ``wire.decode``).

    The server pings every heartbeat, and each one wakes the agent: a comparison of
    bytes instead of an unpack, a schema check and a pack (28 against 68 µs, measured
    cold, as the agent runs). What ``wire.decode`` would check of a ping is checked
    here too: the layout, one field, ``ts`` a finite float of at least 0; the pong
    carries the same 8 bytes back."""
    if len(data) != _PING_SIZE or not data.startswith(_PING_HEAD):
        return None
    ts = _TS.unpack_from(data, _PING_SIZE - 8)[0]
    if not 0.0 <= ts < math.inf:  # NaN compares false
        return None
    return _PONG_HEAD + data[_PING_SIZE - 8:]


_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def spread_offset(server_id: int, spread: float) -> float:
    """This agent's point in the ``spread`` seconds after a minute closes (see
    ``Link._spread_delay``): the fractional part of ``server_id`` times the golden ratio.

    Why not random: server ids are handed out in sequence, and this sequence lays any
    run of consecutive ids out evenly over the window (each new point falls in one of
    the largest gaps left), where random points clump: 10,000 agents over 30 s gave 332
    to 335 summaries in every second this way, 288 to 379 at random. It also stays put
    across restarts, and a test can tell when an agent will send."""
    return spread * ((server_id * _GOLDEN) % 1.0)


class _Throttled:
    """Log a recurring warning at most once per ``every`` seconds, with a count."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last = float("-inf")
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            self._suppressed += 1
            return
        if self._suppressed:
            message += f" ({self._suppressed} more since the last report)"
        self._last, self._suppressed = now, 0
        log.warning(message, *args)


class Link:
    def __init__(
        self,
        config: AgentConfig,
        host: dict[str, Any],
        spool: Spool,
        spool_changed: asyncio.Event,
    ) -> None:
        self.config = config
        self.host = host
        self.spool = spool
        self.spool_changed = spool_changed
        # This agent's point in each minute's spread (see _spread_delay).
        self.spread_offset = spread_offset(config.server_id, config.summary_spread)
        self.ws: websocket.WebSocket | None = None
        self.server_id: int | None = None
        self._bad_frames = _Throttled()
        self._ssl: ssl.SSLContext | None = None
        self._closing = False
        # the current session's clock (see _beat)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost: asyncio.Future[None] | None = None  # fails when the session is over
        self._heartbeat = 5.0
        self._last_rx = 0.0  # loop time of the last frame received on this session
        self._last_sample = 0.0  # loop time of the last live sample sent
        # (loop time, future): the replay's wait for the first sample sent after that time
        self._after_sample: tuple[float, asyncio.Future[None]] | None = None
        self._next_ping = 0.0
        self._beat_timer: asyncio.TimerHandle | None = None
        # what hello said we allow, and the watch for changes after it (grants.py),
        # asked at this loop time next
        self._capabilities: CapabilityWatch | None = None
        self._capabilities_at = 0.0
        self._work_at = 0.0  # loop time: a live sample from then on has more to do
        # the operations the server asked for on this session (operations/)
        self._calls: Dispatcher | None = None

    # -- used by the daemon ---------------------------------------------------

    def send_live(self, frame: bytes, now: float) -> bool:
        """Send a live sample, a whole masked frame (``websocket.binary_frame``), if
        connected and the link keeps up; otherwise drop it (live samples are worth
        nothing late; summaries carry the history). ``now``: the loop's time, as the
        daemon read it for this sample."""
        ws = self.ws
        if ws is None or not ws.offer_frame(frame, LIVE_BUFFER_LIMIT):
            return False
        self._last_sample = now
        if now >= self._work_at:
            self._sample_work(ws, now)
        return True

    def _sample_work(self, ws: websocket.WebSocket, now: float) -> None:
        """What rides on a live sample's wake-up rather than on a wake-up of its own
        (each costs the agent about as much as a sample): the ping when one is due
        (``_beat``), a held summary's release (``_sleep_to_a_sample``), and the check
        for changed capabilities every ``CAPABILITIES_EVERY`` seconds. ``send_live``
        calls it only when one of them is due (``_work_at``): most samples just go."""
        if now >= self._next_ping:
            self._beat(fallback=False)
        after = self._after_sample
        if after is not None and now >= after[0]:
            _resolve(after[1])
        watch = self._capabilities
        if watch is not None and now >= self._capabilities_at:
            self._capabilities_at = now + CAPABILITIES_EVERY
            changed = watch.poll()
            if changed is not None:
                log.info("capabilities changed: now %s; telling the server",
                         ", ".join(changed) or "none")
                with contextlib.suppress(websocket.WebSocketError):
                    ws.send_nowait(wire.encode("capabilities", {"capabilities": changed}))
        self._plan_work()

    def _plan_work(self) -> None:
        """Set ``_work_at``, the earliest time ``_sample_work`` has something to do."""
        at = self._next_ping
        if self._capabilities is not None:
            at = min(at, self._capabilities_at)
        after = self._after_sample
        if after is not None and not after[1].done():
            at = min(at, after[0])
        self._work_at = at

    async def shutdown(self, final_minute: int | None) -> None:
        """Say goodbye on a clean stop: send the last partial summary, then
        ``bye {code: shutdown, retry: true}``, then close. ``run`` then returns."""
        self._closing = True
        ws = self.ws
        if ws is None or ws.closed:
            return
        try:
            async with asyncio.timeout(3.0):
                if final_minute is not None:
                    data = self.spool.get(final_minute)
                    if data is not None:
                        await ws.send(data)
                await ws.send(wire.encode("bye", {
                    "code": "shutdown", "reason": "the agent is stopping", "retry": True}))
                await ws.close(1000, "agent stopping", grace=1.0)
        except (TimeoutError, websocket.WebSocketError, OSError) as exc:
            log.info("link closed without a clean goodbye: %s", exc)
        self.ws = None

    # -- the connection loop --------------------------------------------------

    async def run(self) -> None:
        """Keep a session up until ``shutdown`` or cancelled; raises only ``Fatal``."""
        backoff = Backoff()
        loop = asyncio.get_running_loop()
        while True:
            up_since: float | None = None
            try:
                ws, heartbeat = await self._open()
                up_since = loop.time()
                try:
                    await self._session(ws, heartbeat)
                finally:
                    self.ws = None
                    await ws.close(1001, "reconnecting", grace=1.0)
            except Fatal:
                raise
            except websocket.HandshakeError as exc:
                log.warning("the server refused the connection: %s", exc)
            except (LinkLost, websocket.WebSocketError, OSError, TimeoutError) as exc:
                if self._closing:
                    return
                what = "lost the link" if up_since is not None else "cannot connect"
                log.warning("%s to %s: %s", what, self.config.ws_url, exc or type(exc).__name__)
            except Exception:  # a bug of ours: keep the agent alive, say where
                if self._closing:
                    return
                log.exception("unexpected error on the link")
            if self._closing:
                return
            if up_since is not None and loop.time() - up_since >= STABLE_LINK:
                backoff.reset()
            delay = backoff.next_delay()
            log.info("reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.ws_url.startswith("wss:"):
            return None
        if self._ssl is None:
            ca = self.config.ca_file
            self._ssl = ssl.create_default_context(cafile=str(ca) if ca else None)
        return self._ssl

    def _token(self) -> str:
        try:
            return read_token(self.config.token_file)
        except TokenError as exc:
            raise Fatal(str(exc)) from None

    async def _open(self) -> tuple[websocket.WebSocket, float]:
        """Connect, hello, welcome: returns the open socket and the heartbeat interval."""
        headers = {
            "Authorization": f"Bearer {self._token()}",
            "User-Agent": f"beeyard-agent/{__version__}",
        }
        try:
            ws = await websocket.connect(
                self.config.ws_url, headers=headers, connect_timeout=CONNECT_TIMEOUT,
                max_size=wire.MAX_FRAME, ssl_context=self._ssl_context(),
            )
        except websocket.HandshakeError as exc:
            if exc.status in (401, 403):
                raise Fatal(f"the server refused this agent's token ({exc})") from None
            raise
        try:
            await ws.send(wire.encode("hello", self._hello()))
            async with asyncio.timeout(WELCOME_TIMEOUT):
                while True:
                    frame = self._decode(await ws.receive())
                    if frame is None:
                        continue
                    if frame.type == "welcome":
                        break
                    if frame.type == "bye":
                        self._on_bye(frame.body)
                    elif frame.type == "ping":
                        await ws.send(wire.encode("pong", {"ts": frame.body["ts"]}))
                    else:
                        log.debug("ignoring %s before welcome", frame.type)
        except BaseException:
            await ws.close(1002, "handshake failed", grace=1.0)
            raise
        welcome = frame.body
        reason = wire.compatible(welcome["protocol"])
        if reason is not None:
            await ws.close(1002, "incompatible protocol", grace=1.0)
            raise Fatal(reason.replace("this server's", "this agent's"))
        if welcome["server_id"] != self.config.server_id:
            log.warning("the server calls this host server %d, the config says %d",
                        welcome["server_id"], self.config.server_id)
        self.server_id = welcome["server_id"]
        self.ws = ws
        log.info("connected to %s as server %d (heartbeat %g s)",
                 self.config.ws_url, welcome["server_id"], welcome["heartbeat"])
        return ws, float(welcome["heartbeat"])

    def _hello(self) -> dict[str, Any]:
        from beeyard.agent.grants import CapabilityWatch, hello_capabilities
        from beeyard.agent.hostfacts import addresses

        host = dict(self.host)
        host["addresses"] = [a for a in addresses() if len(a) <= 64]  # may change between links
        # the config's and the unexpired local grants, read at every connection; changes
        # while connected go out as a capabilities frame (send_live)
        capabilities = hello_capabilities(self.config)
        self._capabilities = CapabilityWatch(self.config, capabilities)
        return {
            "protocol": wire.PROTOCOL_VERSION,
            "agent_version": __version__[:64],
            "host": host,
            "capabilities": capabilities,
            "interval": self.config.interval,
        }

    def _decode(self, data: bytes) -> wire.Frame | None:
        try:
            return wire.decode(data)
        except wire.WireError as exc:
            self._bad_frames.warning("ignored a bad frame from the server: %s", exc)
            return None

    def _on_bye(self, body: dict[str, Any]) -> None:
        message = f"the server closed the link: {body['code']}: {body['reason']}"
        if not body["retry"]:
            raise Fatal(message)
        raise LinkLost(message)

    async def _session(self, ws: websocket.WebSocket, heartbeat: float) -> None:
        loop = self._loop = asyncio.get_running_loop()
        lost: asyncio.Future[None] = loop.create_future()
        self._lost = lost
        self._heartbeat = heartbeat
        self._last_rx = loop.time()
        self._last_sample = float("-inf")
        self._next_ping = self._last_rx + heartbeat
        self._capabilities_at = self._last_rx + CAPABILITIES_EVERY
        self._arm()
        from beeyard.agent.operations import Dispatcher

        calls = self._calls = Dispatcher(self.config, ws.send)
        tasks = [
            asyncio.create_task(self._receive(ws), name="receive"),
            asyncio.create_task(self._replay(ws), name="replay"),
        ]
        try:
            done, _ = await asyncio.wait([*tasks, lost], return_when=asyncio.FIRST_EXCEPTION)
        finally:
            if self._beat_timer is not None:
                self._beat_timer.cancel()
            self._lost = self._beat_timer = None
            if not lost.done():
                lost.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._calls = None
            await calls.close()  # shells and commands of this session killed
        errors = [f.exception() for f in (*tasks, lost) if f in done]
        for exc in errors:
            if exc is not None:
                raise exc
        raise LinkLost("session ended")  # pragma: no cover - the tasks only end by raising

    def _arm(self) -> None:
        """(Re)set the fallback timer: ``_beat`` runs from ``send_live`` when a ping is
        due, so while samples flow (more often than heartbeats) this timer, set a
        little later, never fires; it serves long intervals, a failing sampler and
        the dead-link check."""
        if self._beat_timer is not None:
            self._beat_timer.cancel()
        assert self._loop is not None
        heartbeat, interval = self._heartbeat, self.config.interval
        # a sample is sent within an interval after the ping falls due; with samples
        # a heartbeat or more apart, the timer alone keeps the pings on time
        slack = 1.5 * interval if interval < heartbeat else 0.0
        due = min(self._next_ping + slack, self._last_rx + DEAD_AFTER * heartbeat)
        self._beat_timer = self._loop.call_at(due, self._beat)
        self._plan_work()  # the ping may have moved

    def _samples_flow(self, now: float) -> bool:
        """Whether samples tell the server we are here: they go out more often than
        heartbeats and one went out within the last heartbeat. The server counts any
        frame as a sign of life, so then neither a ping of ours nor a pong to its ping
        is needed (each would be a send, and a ping's pong a wake-up, for nothing)."""
        return (self.config.interval < self._heartbeat
                and now - self._last_sample < self._heartbeat)

    def _beat(self, fallback: bool = True) -> None:
        """A ``ping`` every heartbeat, and the session declared lost when no frame
        arrived for ``DEAD_AFTER`` heartbeats."""
        lost, ws, loop = self._lost, self.ws, self._loop
        if lost is None or lost.done() or loop is None:
            return
        now = loop.time()
        dead_after = DEAD_AFTER * self._heartbeat
        if now - self._last_rx >= dead_after:
            lost.set_exception(LinkLost(f"no frame from the server for {dead_after:g} s"))
            return
        if now >= self._next_ping:
            self._next_ping += self._heartbeat
            if self._next_ping <= now:  # the loop was stalled: no burst of pings
                self._next_ping = now + self._heartbeat
            if self._samples_flow(now):
                # should samples stop, the ping is due a heartbeat after the last one
                self._next_ping = self._last_sample + self._heartbeat
                self._arm()
                return
            try:
                if ws is None:
                    raise websocket.WebSocketError("no connection")
                ws.send_nowait(_pack_unchecked("ping", {"ts": time.time()}))
            except websocket.WebSocketError as exc:
                lost.set_exception(LinkLost(str(exc)))
                return
            fallback = True  # the ping moved: move the timer with it
        if fallback:
            self._arm()

    async def _receive(self, ws: websocket.WebSocket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await ws.receive()
            now = self._last_rx = loop.time()
            pong = pong_for(data)
            if pong is not None:
                if not self._samples_flow(now):  # else the samples already answer it
                    ws.send_nowait(pong)  # tiny: no drain
                continue
            frame = self._decode(data)
            if frame is not None:
                await self._handle(ws, frame)

    async def _handle(self, ws: websocket.WebSocket, frame: wire.Frame) -> None:
        body = frame.body
        if frame.type == "ping":  # one pong_for declined (an odd but valid layout)
            if not self._samples_flow(self._last_rx):
                ws.send_nowait(_pack_unchecked("pong", {"ts": body["ts"]}))  # tiny: no drain
        elif frame.type == "ack":
            removed = self.spool.remove(body["minutes"])
            log.debug("server committed %d summaries (%d still spooled)", removed,
                      len(self.spool))
        elif frame.type == "rotate_token":
            await self._rotate(ws, body["token"], frame.id)
        elif frame.type in _OPERATION_FRAMES:
            if self._calls is not None:
                self._calls.handle(frame)
        elif frame.type == "bye":
            self._on_bye(body)
        elif frame.type != "pong":
            log.debug("ignoring a %s frame", frame.type)

    async def _rotate(self, ws: websocket.WebSocket, token: str, frame_id: int | None) -> None:
        path: Path = self.config.token_file
        try:
            write_token(path, token)
        except OSError as exc:
            log.error("cannot store the rotated token in %s: %s", path, exc)
            return  # no token_stored: the server keeps the old token valid
        log.info("stored a rotated run token in %s", path)
        await ws.send(wire.encode("token_stored", {}, id=frame_id))

    def _spread_delay(self, todo: list[int]) -> float:
        """How long to hold back the summary of the minute that just closed.

        Every agent closes its minute at the same wall-clock second, so without this
        a fleet's summaries all reach the server in the same second (at 10,000 agents,
        10,000 decodes, inserts and acks at once: a latency spike for every live sample
        of that second). Each agent sends at its own point in the first
        ``summary_spread`` seconds of the next minute instead, as Telegraf's
        ``flush_jitter`` does. The summary is in the spool all the while, so nothing is
        at risk. Anything else goes at once: a backlog after an outage (more than one
        minute), a minute that closed longer ago, the partial minute of a stop."""
        if len(todo) != 1 or self.spread_offset <= 0:
            return 0.0
        closed_for = time.time() - (todo[0] + 60)
        if not 0 <= closed_for < self.spread_offset:
            return 0.0
        return self.spread_offset - closed_for

    async def _sleep_to_a_sample(self, delay: float) -> None:
        """Sleep ``delay`` seconds, ending with the first live sample sent after them, so
        that a held summary goes out in that sample's wake-up, caches warm, rather than
        in a cold one of its own once a minute. A timer an interval later ends it when
        samples do not flow (not connected long enough, a failing sampler)."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        at = loop.time() + delay
        self._after_sample = (at, woken)
        self._work_at = min(self._work_at, at)
        timer = loop.call_later(delay + self.config.interval + 1.0, _resolve, woken)
        try:
            await woken
        finally:
            timer.cancel()
            self._after_sample = None

    async def _replay(self, ws: websocket.WebSocket) -> None:
        """Send every spooled summary not yet sent on this link, oldest first, at a
        bounded rate; then wait for new ones. A merged entry (new version) is resent."""
        sent: dict[int, int] = {}
        pause = 1.0 / self.config.spool.replay_rate
        loop = asyncio.get_running_loop()
        last_send = float("-inf")
        while True:
            self.spool_changed.clear()
            versions = self.spool.versions
            if len(sent) > 2 * len(versions) + 64:  # forget acknowledged minutes
                sent = {m: v for m, v in sent.items() if m in versions}
            todo = [m for m in self.spool.pending() if sent.get(m) != versions.get(m)]
            if not todo:
                await self.spool_changed.wait()
                continue
            delay = self._spread_delay(todo)
            if delay > 0:
                await self._sleep_to_a_sample(delay)
                continue  # look again: an ack or a merged entry may have come meanwhile
            if len(todo) > 1:
                log.info("replaying %d spooled minute summaries", len(todo))
            for minute in todo:
                version = versions.get(minute)
                data = self.spool.get(minute)
                if data is None or version is None:
                    continue
                # the rate bound as a gap before a send, not a sleep after each: a lone
                # summary needs no timer wake-up of its own after it is sent
                wait = last_send + pause - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await ws.send(data)
                last_send = loop.time()
                sent[minute] = version
