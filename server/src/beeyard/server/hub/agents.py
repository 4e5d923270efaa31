"""The agent hub: ``GET /api/agent/ws``, one ``Link`` per connected agent.

A frame goes one way through here: decoded and checked by ``wire.decode``,
applied to the in-memory live state (which publishes it to subscribers
without awaiting them), and, for minute summaries, queued for the ingest
writer, which acks after commit. Nothing on that path waits for the
database except the bounded ingest queue when it is full: that is the
backpressure that leaves summaries in the agent's spool instead of in our
memory.

The link's life:

1. The auth middleware has resolved the ``bag_`` run token to a server
   (``Access.AGENT``); an unknown or revoked token got a 401 with code
   ``unknown_token`` before any upgrade.
2. The first frame must be ``hello`` within ``HELLO_TIMEOUT``; an
   incompatible protocol gets ``bye {incompatible, retry: false}``.
3. The hello's facts are stored, the link replaces any older link of the
   same server (``bye {replaced}`` to the old one), and ``welcome`` goes out.
4. Frames are read until the agent leaves, a dead link is noticed (no frame
   for ``silence_limit``), too many bad frames arrive, or the hub closes it
   (token rotated, server shutting down). Then the server is marked offline
   (unless a newer link of it took over).

Reading is not a loop: after the upgrade ``hub/socket.py`` hands each message
to ``AgentHub._message`` as its bytes arrive, so a sample is applied without
waking any task. Sending never blocks the hub either: a frame goes straight to
the socket while it has room; past that, to a small per-link buffer drained by
a short-lived task; a link whose buffer overflows is closed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import time
from typing import Any

import asyncpg
from aiohttp import web

from beeyard.server import context
from beeyard.server.auth import tokens
from beeyard.server.auth.middleware import presented_token
from beeyard.server.auth.principal import Access
from beeyard.server.db import servers
from beeyard.server.http.envelope import ApiError
from beeyard.server.http.routing import route
from beeyard.server.hub.calls import DEFAULT_WINDOW, Call, RemoteError
from beeyard.server.hub.live import LiveState
from beeyard.server.hub.socket import AgentSocket
from beeyard.shared import wire
from beeyard.shared.operations import lookup

log = logging.getLogger("beeyard.server.hub")

HELLO_TIMEOUT = 10.0  # seconds from upgrade to the hello frame
MAX_BAD_FRAMES = 10  # undecodable frames a link may send before it is closed
OUT_BUFFER = 256  # frames waiting to go to one agent; beyond, the agent is not reading
CLOSE_TIMEOUT = 3.0  # seconds to wait for the agent's close reply
PING_REUSE = 0.1  # seconds one encoded ping frame is sent to every link that is due
DEAD_FLOOR = 9.0  # with 1 s samples, 3 missed samples is too jumpy: 9 s, still < 10 s


def ping_due(heartbeat: float, interval: float) -> float:
    """Seconds after its last ping that the presence sweep pings a link.

    A link whose samples come more often than heartbeats is pinged as soon as a
    sample arrives after ``heartbeat`` seconds (``AgentHub._dispatch``), in the
    agent's own wake-up: at 1 s samples a ping at another moment cost the agent a
    wake-up of its own, ~0.2 ms of CPU every heartbeat. The sweep pings such a link
    only when no sample came for one interval more; any other link at ``heartbeat``."""
    return heartbeat + interval if interval < heartbeat else heartbeat


def silence_limit(heartbeat: float, interval: float) -> float:
    """How long a link may be silent before it counts as dead.

    The agent sends a frame at least every heartbeat (ping) and every sample
    interval (sample), so three of the shorter of the two missed means the
    link is gone; but no less than ``DEAD_FLOOR``, so a short stall (a busy
    host, our own event loop under load) does not tear down healthy links,
    and never more than three heartbeats. At the defaults (5 s heartbeat, 1 s
    samples): 9 s.
    """
    return min(3 * heartbeat, max(3 * min(heartbeat, interval), DEAD_FLOOR))


class Link:
    """One agent's WebSocket after its hello was accepted."""

    def __init__(self, hub: AgentHub, server_id: int, sock: AgentSocket,
                 token_digest: bytes, interval: float) -> None:
        self.hub = hub
        self.server_id = server_id
        self.sock = sock
        self.token_digest = token_digest
        self.interval = interval
        self.silence = silence_limit(hub.heartbeat, interval)
        self.ping_due = ping_due(hub.heartbeat, interval)
        self.connected = time.time()
        self.last_frame = time.monotonic()
        self.last_ping = time.monotonic()
        self.bad_frames = 0
        self.closing = False
        self.farewell = ("shutdown", "link closed")  # the bye when the reader ends it
        self.rotating = False  # a rotation is under way: the API closes the link after it
        self.over: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.blocked: asyncio.Task[None] | None = None  # a summary waiting for queue room
        self._out: collections.deque[bytes] = collections.deque()
        self._sender: asyncio.Task[None] | None = None
        self._room = asyncio.Event()  # set while the outgoing queue is under half full
        self._room.set()
        self.pending: dict[int, asyncio.Future[None]] = {}  # frame id -> awaiting token_stored
        self.calls: dict[int, Call] = {}  # operations in progress (hub/calls.py)

    def send(self, frame_type: str, body: dict[str, Any], id: int | None = None) -> bool:
        """Queue a frame for the agent; False if the link is closing or overflowing."""
        return self.send_bytes(wire.encode(frame_type, body, id))

    def send_bytes(self, data: bytes) -> bool:
        """Queue an encoded frame (one ping frame serves every link pinged at once)."""
        if self.closing:
            return False
        if not self._out and self.sock.writable:  # straight out: no task per frame
            self.sock.write(data)
            return True
        if len(self._out) >= OUT_BUFFER:
            log.warning("server %d: the agent is not reading; closing its link", self.server_id)
            self.hub.spawn(self.close("shutdown", "the agent stopped reading", retry=True))
            return False
        self._out.append(data)
        if len(self._out) >= OUT_BUFFER // 2:
            self._room.clear()
        if self._sender is None:
            self._sender = asyncio.create_task(self._flush(), name=f"agent-send:{self.server_id}")
        return True

    async def _flush(self) -> None:
        try:
            while self._out and not self.sock.closed:
                await self.sock.drain()
                self.sock.write(self._out.popleft())
                if len(self._out) < OUT_BUFFER // 2:
                    self._room.set()
        except Exception as exc:  # the transport went away under us; the reader sees it too
            log.debug("server %d: send failed: %s", self.server_id, exc)
            self._out.clear()
        finally:
            self._sender = None
            self._room.set()

    async def room(self) -> None:
        """Wait until the outgoing queue is under half full: a call streaming input
        (a paste into a terminal, an upload) paces itself instead of overflowing it."""
        while not self._room.is_set() and not self.closing:
            await self._room.wait()

    async def close(self, code: str, reason: str, *, retry: bool) -> None:
        """Say ``bye`` (after what is queued) and close. Safe to call more than once."""
        if self.closing:
            return
        self.closing = True
        try:
            if self._sender is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self._sender), CLOSE_TIMEOUT)
            await _bye(self.sock, code, reason, retry=retry)
        finally:
            if not self.over.done():
                self.over.set_result(None)
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionResetError("the link closed"))
            for call in list(self.calls.values()):
                call._finish(RemoteError("lost", "the agent disconnected during the operation"))
            self._room.set()  # input waiting for room finds the call over


class AgentHub:
    """The connected agents of this process, by server id."""

    def __init__(self, live: LiveState, heartbeat: float) -> None:
        self.live = live
        self.heartbeat = heartbeat
        self.links: dict[int, Link] = {}
        self.bad_frames = 0  # since start, over all links
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.ingest: Any = None  # services.ingest.Ingest, set when the writer starts
        self.pool: Any = None  # the app's asyncpg pool, once a link was served
        self._ping = (float("-inf"), b"")  # (monotonic time made, frame): see ping()
        live.on_remove.append(self._server_removed)

    def _server_removed(self, server_id: int) -> None:
        """The server was deleted: its agent must enroll again to come back."""
        link = self.links.pop(server_id, None)
        if link is not None:
            self.spawn(link.close("revoked", "this server was deleted; enroll the agent again",
                                  retry=False))

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background, holding a reference until it ends."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def link(self, server_id: int) -> Link | None:
        return self.links.get(server_id)

    def send(self, server_id: int, frame_type: str, body: dict[str, Any]) -> bool:
        """Send to the server's current link; False if it has none."""
        link = self.links.get(server_id)
        return link is not None and link.send(frame_type, body)

    def call(self, server_id: int, op_name: str, args: dict[str, Any],
             window: int | None = None) -> Call:
        """Start operation ``op_name`` on the server's agent; ``RemoteError("offline")``
        if it has no link to this process. The arguments must be valid already."""
        op = lookup(op_name)
        link = self.links.get(server_id)
        if link is None or link.closing:
            raise RemoteError("offline", f"server {server_id} is offline")
        call_id = next(self._ids)
        if window is None:
            window = DEFAULT_WINDOW if op.streams else 0
        call = Call(call_id, op, window, link)
        if not link.send("request", {"op": op_name, "args": args, "window": window},
                         id=call_id):
            call._finish(RemoteError("offline", f"server {server_id} is not reading its link"))
        return call

    async def rotate(self, server_id: int, token: str, wait: float = 10.0) -> bool | None:
        """Give the connected agent a new run token. True once it answered token_stored,
        False if it did not in time, None if it is not connected to this process."""
        link = self.links.get(server_id)
        if link is None:
            return None
        link.rotating = True
        frame_id = next(self._ids)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        link.pending[frame_id] = fut
        try:
            if not link.send("rotate_token", {"token": token}, id=frame_id):
                return False
            await asyncio.wait_for(fut, wait)
            return True
        except (TimeoutError, ConnectionResetError):
            return False
        finally:
            link.pending.pop(frame_id, None)

    async def disconnect(self, server_id: int, code: str, reason: str, *, retry: bool) -> None:
        link = self.links.get(server_id)
        if link is not None:
            await link.close(code, reason, retry=retry)

    async def shutdown(self, app: web.Application) -> None:
        """On server stop: tell every agent to come back later, all at once."""
        links = list(self.links.values())
        await asyncio.gather(
            *(link.close("shutdown", "the server is stopping", retry=True) for link in links),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            task.cancel()

    # -- one connection --------------------------------------------------------

    async def serve(self, app: web.Application, server_id: int, token_digest: bytes,
                    sock: AgentSocket) -> None:
        hello = await self._hello(sock, server_id)
        if hello is None:
            return
        body = hello.body
        pool = self.pool = app[context.POOL]
        try:
            current = await servers.record_hello(
                pool, server_id, token_digest=token_digest, host=body["host"],
                capabilities=body["capabilities"], agent_version=body["agent_version"],
                protocol=body["protocol"], interval=body["interval"],
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("server %d: cannot record its hello (%s); asking it to retry",
                        server_id, exc)
            await _bye(sock, "shutdown", "the server cannot reach its database; retrying later",
                       retry=True)
            return
        if not current:  # the token was rotated between the upgrade and now
            await _bye(sock, "revoked", "this run token was replaced; enroll the agent again",
                       retry=False)
            return
        link = Link(self, server_id, sock, token_digest, body["interval"])
        old = self.links.get(server_id)
        self.links[server_id] = link
        if old is not None:
            log.info("server %d: a new link replaces the old one", server_id)
            self.spawn(old.close("replaced", "another connection with this server's token "
                                 "took over", retry=False))
        self.live.mark_online(server_id, body["interval"])
        self.live.server_updated(server_id, {
            "host": body["host"], "capabilities": body["capabilities"],
            "agent_version": body["agent_version"], "protocol": body["protocol"],
        })
        link.send("welcome", {"server_id": server_id, "protocol": wire.PROTOCOL_VERSION,
                              "heartbeat": self.heartbeat})
        log.info("server %d connected (agent %s, protocol %s)", server_id,
                 body["agent_version"], body["protocol"])
        try:
            sock.deliver(functools.partial(self._message, link))
            await asyncio.wait({link.over, sock.ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if link.blocked is not None:  # gone while waiting: the agent resends it
                link.blocked.cancel()
            sock.stop()
            self._gone(link)
            code, reason = link.farewell
            await link.close(code, reason, retry=True)
            log.info("server %d disconnected", server_id)

    def _gone(self, link: Link) -> None:
        """The link ended: unless a newer link of the server took over, it is offline."""
        if self.links.get(link.server_id) is link:
            del self.links[link.server_id]
            self.live.mark_offline(link.server_id)
            self.spawn(_touch(self.pool, link.server_id))

    async def _hello(self, sock: AgentSocket, server_id: int) -> wire.Frame | None:
        try:
            first = await sock.first(HELLO_TIMEOUT)
        except TimeoutError:
            await _bye(sock, "invalid_frame", f"no hello within {HELLO_TIMEOUT:g} s", retry=True)
            return None
        if first is None:
            return None
        payload, binary = first
        if not binary:
            await _bye(sock, "invalid_frame", "frames are binary msgpack messages", retry=True)
            return None
        try:
            frame = wire.decode(payload)
        except wire.WireError as exc:
            self.bad_frames += 1
            await _bye(sock, "invalid_frame", f"bad hello: {exc}", retry=True)
            return None
        if frame.type != "hello":
            await _bye(sock, "invalid_frame", f"the first frame must be hello, not {frame.type}",
                       retry=True)
            return None
        reason = wire.compatible(frame.body["protocol"])
        if reason is not None:
            log.info("server %d: refused agent protocol %s", server_id, frame.body["protocol"])
            await _bye(sock, "incompatible", reason, retry=False)
            return None
        return frame

    async def _capabilities(self, server_id: int, capabilities: list[str]) -> None:
        """Store and announce the agent's new capability set (off the read loop: a slow
        database must not hold up the link)."""
        try:
            await servers.set_capabilities(self.pool, server_id, capabilities)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("server %d: cannot store its capabilities (%s); they are stored "
                        "at its next hello", server_id, exc)
        log.info("server %d now allows: %s", server_id, ", ".join(capabilities) or "nothing")
        self.live.server_updated(server_id, {"capabilities": capabilities})

    def ping(self, link: Link, now: float) -> None:
        """Send ``link`` its heartbeat ``ping``; one frame serves every link pinged
        within PING_REUSE seconds (its ``ts`` is only echoed back)."""
        made, frame = self._ping
        if now - made >= PING_REUSE:
            frame = wire.encode("ping", {"ts": time.time()})
            self._ping = (now, frame)
        link.last_ping = now
        link.send_bytes(frame)

    def sweep(self, links: list[Link] | None = None) -> None:
        """Close the links (of ``links``, or all) silent for longer than their limit.

        Each link swept once a second (the presence job) rather than a read deadline
        per frame: arming and cancelling a timer for every frame was ~8 % of the
        server's CPU at 1,000 agents. A dead link is still noticed within its limit
        plus a second.
        """
        now = time.monotonic()
        for link in list(self.links.values()) if links is None else links:
            if not link.closing and now - link.last_frame > link.silence:
                log.info("server %d: no frame for %g s; the link is dead", link.server_id,
                         link.silence)
                link.farewell = ("shutdown", "no frame in time; reconnect")
                self._gone(link)  # offline now, not after the close handshake times out
                self.spawn(link.close(*link.farewell, retry=True))

    def _message(self, link: Link, payload: bytes, binary: bool) -> None:
        """One message from the agent, handled as it arrives (``hub/socket.py``): no task
        is woken per frame."""
        link.last_frame = time.monotonic()
        if not binary:
            ok = self._bad(link, "a text message")
        else:
            try:
                frame = wire.decode(payload)
            except wire.WireError as exc:
                ok = self._bad(link, str(exc))
            else:
                ok = self._dispatch(link, frame)
        if not ok:
            link.sock.stop()
            if not link.over.done():
                link.over.set_result(None)

    def _bad(self, link: Link, why: str) -> bool:
        """Count a bad frame; False once the link has sent too many."""
        self.bad_frames += 1
        link.bad_frames += 1
        log.warning("server %d: bad frame (%d): %s", link.server_id, link.bad_frames, why[:200])
        if link.bad_frames >= MAX_BAD_FRAMES:
            link.farewell = ("invalid_frame", f"{MAX_BAD_FRAMES} invalid frames; last: {why[:200]}")
            return False
        return True

    def _dispatch(self, link: Link, frame: wire.Frame) -> bool:
        """Act on one frame; False ends the link."""
        t, body, sid = frame.type, frame.body, link.server_id
        if t == "sample":
            self.live.record_sample(sid, body["ts"], body["metrics"])
            if link.last_frame - link.last_ping >= self.heartbeat:
                # now, while the agent that just sent this is still awake: a ping at
                # any other moment wakes it once more, from cold (see ping_due)
                self.ping(link, link.last_frame)
        elif t == "summary":
            self.live.seen(sid)
            if self.ingest is not None and not self.ingest.offer(sid, body):
                link.sock.pause_reading()  # at once: no later frame of this link overtakes it
                link.blocked = asyncio.create_task(self._backpressure(link, sid, body))
        elif t == "ping":
            self.live.seen(sid)
            link.send("pong", {"ts": body["ts"]})
        elif t == "pong":
            self.live.seen(sid)
        elif t == "capabilities":
            self.live.seen(sid)
            self.spawn(self._capabilities(sid, body["capabilities"]))
        elif t in ("reply", "data", "credit"):
            call = link.calls.get(frame.id) if frame.id is not None else None
            if call is None:
                return True  # a call we gave up on (cancelled, timed out): its tail
            if t == "reply":
                call.on_reply(body)
            elif t == "credit":
                call.on_credit(body["bytes"])
            elif not call.on_data(body["data"], body["eof"]):
                call._finish(RemoteError("failed", "the agent sent more than it was asked"))
                return self._bad(link, f"data beyond the window of call {frame.id}")
        elif t == "token_stored":
            fut = link.pending.get(frame.id) if frame.id is not None else None
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif t == "bye":
            log.info("server %d said bye (%s): %s", sid, body["code"], body["reason"])
            return False
        else:
            return self._bad(link, f"unexpected {t} frame")
        return True

    async def _backpressure(self, link: Link, server_id: int, body: dict[str, Any]) -> None:
        """The ingest queue is full (the database is slow or down): stop reading this
        agent until its summary fits. Its further summaries stay in its spool, not in
        our memory, and its samples wait in the socket."""
        try:
            await self.ingest.put(server_id, body)
        finally:
            link.blocked = None
            link.sock.resume_reading()


async def _bye(sock: AgentSocket, code: str, reason: str, *, retry: bool) -> None:
    """Say why the link ends, then close it (the agent logs the reason). Never waits
    longer than ``CLOSE_TIMEOUT``: an agent that stopped reading is cut off."""
    if not sock.closed:
        sock.write(wire.encode("bye", {"code": code, "reason": reason, "retry": retry}))
    with contextlib.suppress(Exception):
        await sock.close(within=CLOSE_TIMEOUT)


async def _touch(pool: Any, server_id: int) -> None:
    try:
        await servers.touch(pool, [server_id])
    except Exception as exc:
        log.debug("could not record last_seen of server %d: %s", server_id, exc)


HUB = web.AppKey("agent_hub", AgentHub)


@route("GET", "/api/agent/ws", Access.AGENT, "agent.ws", tags=("agent",),
       extra_statuses=(426,))
async def agent_ws(request: web.Request) -> web.StreamResponse:
    """The agent link: a WebSocket of msgpack frames (``beeyard.shared.frames``).

    Authenticate with ``Authorization: Bearer bag_...`` (the run token from
    registration). An unknown or revoked token is refused before the upgrade
    with 401 and ``"code": "unknown_token"``; the agent stops retrying on it.
    """
    # No extensions (compress=False): hub/socket.py reads the frames after the upgrade.
    ws = web.WebSocketResponse(max_msg_size=wire.MAX_FRAME, timeout=CLOSE_TIMEOUT,
                               compress=False)
    if not ws.can_prepare(request).ok:
        raise ApiError(426, "this is the agent WebSocket: connect with a WebSocket client")
    server_id = context.principal(request).server_id
    token = presented_token(request)
    if server_id is None or token is None:  # pragma: no cover - Access.AGENT ensures both
        raise ApiError(401, "authentication required")
    await ws.prepare(request)
    try:
        sock = AgentSocket.take(request, wire.MAX_FRAME)  # frames from here on: hub/socket.py
    except ConnectionResetError:  # gone during the upgrade: nothing to serve
        return ws
    hub = request.app[HUB]
    await asyncio.create_task(hub.serve(request.app, server_id, tokens.digest(token), sock),
                              name=f"agent-link:{server_id}")
    return ws


ROUTES = [agent_ws]
