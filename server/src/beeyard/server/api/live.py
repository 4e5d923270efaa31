"""Live updates for browsers and scripts: ``/api/ws/servers`` (WebSocket) and
``/api/stream`` (Server-Sent Events), the same stream in two transports.

Each connection subscribes to the live state *before* it takes the snapshot, so
no change between the two is lost (at worst one is seen twice, which is
harmless: every event carries the full new value). A subscriber owns a bounded
buffer (hub/live.py); a client too slow to keep up loses events there, and
then we close its connection instead of letting it show a wrong picture: it
reconnects and starts again from a fresh snapshot. Publishing never waits for
any client, so one slow browser cannot delay the others or the agents.

Authentication is the usual middleware's: cookie session, API key or Bearer
token. Browsers cannot set headers on a WebSocket and send cookies with it
from any page, so a cookie-authenticated upgrade must come from our own origin
(the ``Origin`` header names the same host as ``Host``): otherwise any site the
signed-in operator visits could open the socket and read the fleet
(cross-site WebSocket hijacking). SSE needs no such check: a cross-site
``EventSource`` can send the cookie only with CORS, which we never grant, and the
cookie is ``SameSite=Strict``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from beeyard.server import context
from beeyard.server.api.servers import fleet, one
from beeyard.server.auth.middleware import resolve
from beeyard.server.auth.principal import Access, Denied, authorize
from beeyard.server.http.envelope import ApiError, dumps, dumps_bytes
from beeyard.server.http.middleware import API_CSP
from beeyard.server.http.routing import route
from beeyard.server.hub.live import Subscription
from beeyard.shared.schema import Field, Schema

log = logging.getLogger("beeyard.server.live")

# Events a client may fall behind before it is dropped: a few seconds of a 10,000-agent
# fleet (references to shared events, so ~0.5 MB at most), so that a pause of the
# server or the client does not cost a reconnect and a fresh snapshot of the fleet.
BUFFER = 65536
KEEPALIVE = 15.0  # seconds between SSE comments / WebSocket pings on an idle stream
POLL = 1.0  # seconds between checks that an SSE client is still there
SEND_TIMEOUT = 10.0  # a client that takes longer than this to accept a frame is dropped
SLOW_CLOSE = 4008  # WebSocket close code: too slow, reconnect
REVOKED_CLOSE = 4001  # WebSocket close code: the credential was revoked
REAUTH = 60.0  # seconds between re-checks of an open stream's credential


def check_origin(request: web.Request) -> None:
    """Refuse a cookie-authenticated upgrade from another origin (CSWSH).

    Header credentials (API key, Bearer) cannot be attached by a foreign page, and
    non-browser clients send no Origin, so only the cookie case is checked.
    """
    principal = context.principal(request)
    if principal.kind != "session":
        return
    origin = request.headers.get("Origin")
    if origin is None:
        return
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        netloc = ""
    if not netloc or netloc != request.host.lower():
        raise ApiError(403, "cross-origin WebSocket refused: Origin does not match Host")


STREAM_QUERY = Schema("LiveStreamQuery", (
    Field("server_id", "int", required=False, min=1, max=2**53,
          doc="only this server's events, with each sample's full metrics; without it, "
              "the whole fleet, samples carrying only their summary values"),
))


def _watched(request: web.Request) -> int | None:
    server_id: int | None = context.query(request)["server_id"]
    return server_id


async def snapshot(request: web.Request) -> dict[str, Any]:
    """The stream's first message: the fleet, or the one server it watches (404 if none)."""
    server_id = _watched(request)
    servers = await fleet(request) if server_id is None else [await one(request, server_id)]
    return {"type": "snapshot", "servers": servers}


@route("GET", "/api/ws/servers", Access.VIEWER, "live.ws", tags=("live",),
       query=STREAM_QUERY, status=101, extra_statuses=(404, 426))
async def ws_servers(request: web.Request) -> web.StreamResponse:
    """Live fleet updates over WebSocket: a snapshot, then every change.

    The first text frame is ``{"type": "snapshot", "servers": [...]}`` (as ``GET
    /api/servers``). Every later frame is a JSON **array** of the changes since the
    previous frame, oldest first (one frame per batch, not per change: at 10,000
    agents a frame per change would cost the server more than the agents do):
    ``sample`` (``server_id``, ``ts``, ``values``, and ``metrics`` when watching one
    server), ``online``, ``offline``, ``server_updated`` (``fields``),
    ``server_removed``. ``?server_id=`` watches one server. A client that falls too
    far behind is closed with code 4008 and should reconnect. Cookie sessions must
    come from this server's own origin.
    """
    check_origin(request)
    ws = web.WebSocketResponse(heartbeat=KEEPALIVE, max_msg_size=4096)
    if not ws.can_prepare(request).ok:
        raise ApiError(426, "this endpoint needs a WebSocket upgrade",
                       headers={"Upgrade": "websocket"})
    with _stream(request) as sub:
        first = dumps(await snapshot(request))
        await ws.prepare(request)
        reader = asyncio.create_task(_discard_incoming(ws))
        reader.add_done_callback(lambda _: sub.poke())  # the client left or closed
        send_text = functools.partial(ws.send_frame, opcode=WSMsgType.TEXT)
        loop = asyncio.get_running_loop()
        due = [False]  # the credential's re-check is due (set by the timer, not by clock
        # arithmetic: uvloop's timers may fire a hair before their time)

        def recheck_due() -> None:
            due[0] = True
            sub.poke()

        recheck = loop.call_later(REAUTH, recheck_due)
        try:
            await _send(ws.send_str, first)
            while not ws.closed:
                await sub.wait()  # events, or a poke: the re-check is due, the client left
                if reader.done():
                    break
                if due[0]:
                    if not await still_allowed(request):
                        await ws.close(code=REVOKED_CLOSE, message=b"credential no longer valid")
                        break
                    due[0] = False
                    recheck = loop.call_later(REAUTH, recheck_due)
                if sub.closed:
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
                    break
                events = sub.drain()
                if sub.dropped:
                    await ws.close(code=SLOW_CLOSE, message=b"too slow; reconnect")
                    break
                if events:  # JSON written straight to bytes: no str made only to encode it
                    await _send(send_text, dumps_bytes(events))
        except (TimeoutError, ConnectionResetError):
            pass  # a stuck or vanished client: drop it
        finally:
            recheck.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if not ws.closed:
                await ws.close()
    return ws


async def _discard_incoming(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends, so pings are answered and a close is seen."""
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break


async def _send(send: Any, text: str | bytes) -> None:
    async with asyncio.timeout(SEND_TIMEOUT):
        await send(text)


@route("GET", "/api/stream", Access.VIEWER, "live.sse", tags=("live",), query=STREAM_QUERY,
       extra_statuses=(404,))
async def sse(request: web.Request) -> web.StreamResponse:
    """Live fleet updates as Server-Sent Events: a snapshot, then every change.

    ``text/event-stream``: first an ``event: snapshot`` whose data is ``{"type":
    "snapshot", "servers": [...]}``, then one event per change named by its type
    (``sample``, ``online``, ``offline``, ``server_updated``, ``server_removed``;
    the same objects as the WebSocket's), with a comment line every 15 s while
    idle. ``?server_id=`` watches one server (samples with full metrics). A client
    that falls too far behind gets ``event: dropped`` and the stream ends;
    reconnect for a fresh snapshot.
    """
    with _stream(request) as sub:
        first = await snapshot(request)
        resp = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass events on at once
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": API_CSP,
        })
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        try:
            await _send(resp.write, _event("snapshot", dumps(first)))
            written = checked = loop.time()
            while not sub.closed:
                if loop.time() - checked >= REAUTH:
                    if not await still_allowed(request):
                        break
                    checked = loop.time()
                try:
                    async with asyncio.timeout(POLL):
                        await sub.wait()
                except TimeoutError:
                    if _gone(request):
                        break
                    if loop.time() - written >= KEEPALIVE:
                        await _send(resp.write, b": keep-alive\n\n")
                        written = loop.time()
                    continue
                events = sub.drain()
                if sub.dropped:
                    await _send(resp.write, _event("dropped", '{"type":"dropped"}'))
                    break
                if events:
                    await _send(resp.write, b"".join(_event(e["type"], dumps(e)) for e in events))
                    written = loop.time()
        except (TimeoutError, ConnectionResetError):
            pass  # a stuck or vanished client: drop it
    return resp


def _gone(request: web.Request) -> bool:
    """Whether the client has hung up (aiohttp does not cancel the handler for it)."""
    return request.transport is None or request.transport.is_closing()


# Open streams per application, so that stopping the server ends them at once instead
# of waiting out the shutdown timeout (keyed by id: tests run several apps in one process).
_OPEN: dict[int, set[Subscription]] = {}


@contextlib.contextmanager
def _stream(request: web.Request) -> Iterator[Subscription]:
    with request.app[context.LIVE].subscribe(BUFFER, _watched(request)) as sub:
        streams = _OPEN.setdefault(id(request.app), set())
        streams.add(sub)
        try:
            yield sub
        finally:
            streams.discard(sub)


async def close_streams(app: web.Application) -> None:
    """``on_shutdown``: end every live stream of ``app``."""
    for sub in list(_OPEN.pop(id(app), ())):
        sub.close()


def _event(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


async def still_allowed(request: web.Request) -> bool:
    """Whether the stream's credential still admits it: a signed-out session, a revoked
    key or a disabled user ends an open stream within ``REAUTH`` seconds, as it would
    end the next REST call."""
    try:
        principal = await resolve(request)
        authorize(Access.VIEWER, "GET", principal)
    except Denied:
        return False
    return principal is not None


ROUTES = [ws_servers, sse]
