"""The web terminal: a shell on a host, relayed between a browser's WebSocket and the
host's agent (``terminal.open``, agent/operations/terminal.py).

Opening one takes two steps, both as an admin with the usual credential:

1. ``POST /api/ws/terminal/{server_id}/token`` checks what it can at once (the
   server exists, is online, and its agent reported the terminal capability) and
   mints a channel token (auth/channels.py): single-use, 30 s, bound to this
   principal and this server.
2. ``GET /api/ws/terminal/{server_id}?token=…&cols=…&rows=…`` spends the token and
   upgrades. Binary messages are terminal bytes, both ways; the client's text
   messages are JSON controls (``{"type": "resize", "cols": 120, "rows": 40}``);
   the server's text messages say how it ended (``{"type": "exit", ...}`` or
   ``{"type": "error", "status": 403, "error": "..."}``) before it closes, with
   code 1000 or 4000 + the HTTP status (4403: the agent refused).

A session belongs to the principal that opened it: its bytes flow only between
that one socket and that one call, the registry below is keyed by owner, and
there is no way to attach to a session, one's own or another's. Closing the
socket cancels the call, and the agent kills the shell's whole session. The
audit log gets ``terminal.start`` (who, which server) and ``terminal.end``
(duration, bytes each way, how it ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from beeyard.server import context
from beeyard.server.api import remote
from beeyard.server.api.live import check_origin
from beeyard.server.auth.channels import ChannelTokens, TooMany
from beeyard.server.auth.middleware import resolve
from beeyard.server.auth.principal import Access, Denied, Principal, authorize
from beeyard.server.db import audit
from beeyard.server.http.envelope import ApiError, dumps, ok
from beeyard.server.http.params import path_id
from beeyard.server.http.routing import route
from beeyard.server.hub.calls import Call, RemoteError
from beeyard.shared.frames import CHUNK
from beeyard.shared.operations.terminal import MAX_COLS, MAX_ROWS
from beeyard.shared.schema import Field, Schema, SchemaError

log = logging.getLogger("beeyard.server.terminal")

PURPOSE = "terminal"
KEEPALIVE = 15.0  # seconds between WebSocket pings
SEND_TIMEOUT = 30.0  # a browser that takes longer to accept output is dropped
REAUTH = 60.0  # seconds between re-checks of the socket's credential
MAX_MESSAGE = 1024 * 1024  # a paste larger than this must come in several messages
RESULT_WAIT = 5.0  # seconds to wait for the agent's reply once the stream ended

_SIZE = (
    Field("cols", "int", required=False, min=1, max=MAX_COLS, default=80),
    Field("rows", "int", required=False, min=1, max=MAX_ROWS, default=24),
)
CONNECT_QUERY = Schema("TerminalConnect", (
    Field("token", "str", min=1, max=128, doc="the channel token from POST …/token"),
    *_SIZE,
))
CONTROL = Schema("TerminalControl", (
    Field("type", "str", choices=("resize",)),
    Field("cols", "int", min=1, max=MAX_COLS),
    Field("rows", "int", min=1, max=MAX_ROWS),
), doc="a client's text message on the terminal socket")

TOKEN_RESPONSE = {"type": "object", "properties": {
    "token": {"type": "string", "description": "single-use channel token"},
    "expires_in": {"type": "number", "description": "seconds it stays valid"},
    "url": {"type": "string", "description": "the socket's path, token included"},
}}


@dataclass
class TerminalSession:
    """One open terminal, as the registry knows it."""

    owner: int  # the user id of the principal that opened it
    number: int
    server_id: int
    call: Call
    started: float


class Sessions:
    """Open terminals by owner. Nothing here looks a session up but by its owner, and
    nothing hands out a session's call: it is for counting and for ending them."""

    def __init__(self) -> None:
        self._by_owner: dict[int, dict[int, TerminalSession]] = {}
        self._numbers = itertools.count(1)

    def add(self, owner: int, server_id: int, call: Call) -> TerminalSession:
        session = TerminalSession(owner, next(self._numbers), server_id, call, time.monotonic())
        self._by_owner.setdefault(owner, {})[session.number] = session
        return session

    def remove(self, session: TerminalSession) -> None:
        mine = self._by_owner.get(session.owner, {})
        mine.pop(session.number, None)
        if not mine:
            self._by_owner.pop(session.owner, None)

    def of(self, owner: int) -> list[TerminalSession]:
        return list(self._by_owner.get(owner, {}).values())

    def __len__(self) -> int:
        return sum(len(m) for m in self._by_owner.values())


_TOKENS: weakref.WeakKeyDictionary[web.Application, ChannelTokens] = weakref.WeakKeyDictionary()
_SESSIONS: weakref.WeakKeyDictionary[web.Application, Sessions] = weakref.WeakKeyDictionary()


def channel_tokens(app: web.Application) -> ChannelTokens:
    if app not in _TOKENS:
        _TOKENS[app] = ChannelTokens()
    return _TOKENS[app]


def sessions(app: web.Application) -> Sessions:
    if app not in _SESSIONS:
        _SESSIONS[app] = Sessions()
    return _SESSIONS[app]


@route("POST", "/api/ws/terminal/{server_id}/token", Access.ADMIN, "terminal.token",
       tags=("terminal",), response=TOKEN_RESPONSE, extra_statuses=(404, 429))
async def mint_token(request: web.Request) -> web.Response:
    """A single-use channel token to open a terminal on a server (valid 30 s).

    Refuses at once what the server knows cannot work: no such server (404), offline
    (404), or its agent has not enabled the terminal capability (403). The token
    works only for the same user and session (or key, or device) that minted it,
    for this server, once.
    """
    server_id = path_id(request, "server", "server_id")
    request[context.AUDIT_TARGET] = f"server:{server_id}"
    await remote.preflight(request, server_id, PURPOSE)
    store = channel_tokens(request.app)
    try:
        token = store.mint(context.principal(request), PURPOSE, server_id)
    except TooMany as exc:
        raise ApiError(429, str(exc)) from None
    return ok({"token": token, "expires_in": store.ttl,
               "url": f"/api/ws/terminal/{server_id}?token={token}"})


@route("GET", "/api/ws/terminal/{server_id}", Access.ADMIN, "terminal.ws", tags=("terminal",),
       query=CONNECT_QUERY, status=101, extra_statuses=(404, 426), audited=False)
async def terminal_ws(request: web.Request) -> web.StreamResponse:
    """A terminal on the server, over WebSocket (token from POST …/token).

    Binary messages carry the terminal's bytes both ways (keys in, output out). A
    text message from the client is a JSON control: ``{"type": "resize", "cols": N,
    "rows": M}``. The server's last text message says how the session ended:
    ``{"type": "exit", "ended": "exit"|"idle"|..., "exit_status": 0, ...}`` or
    ``{"type": "error", "code": "denied", "status": 403, "error": "<the agent's
    reason>"}``, then it closes (1000, or 4000 + status). Closing the socket ends
    the shell and everything it started. Cookie sessions must come from this
    server's own origin.
    """
    principal = context.principal(request)
    server_id = path_id(request, "server", "server_id")
    query = context.query(request)
    record = _Auditor(request, principal, server_id)
    ws = web.WebSocketResponse(heartbeat=KEEPALIVE, max_msg_size=MAX_MESSAGE)
    if not ws.can_prepare(request).ok:
        raise ApiError(426, "this endpoint needs a WebSocket upgrade",
                       headers={"Upgrade": "websocket"})
    try:
        check_origin(request)  # before the token is spent: a foreign page cannot burn it
        refused = channel_tokens(request.app).redeem(query["token"], principal, PURPOSE,
                                                     server_id)
        if refused is not None:
            raise ApiError(403, refused)
        call = await remote.start(request, server_id, "terminal.open",
                                  {"cols": query["cols"], "rows": query["rows"],
                                   "term": "xterm-256color"})
    except ApiError as exc:
        await record("terminal.start", exc.status, {"reason": exc.message})
        raise
    await ws.prepare(request)
    await record("terminal.start", 101, {"cols": query["cols"], "rows": query["rows"]})
    registry = sessions(request.app)
    session = registry.add(principal.user_id, server_id, call)
    # aiohttp cancels this handler when the browser's connection drops: what follows
    # the relay runs in ``finally``, and the end record is written even then.
    ended, outcome = "browser_closed", dict[str, Any]()
    try:
        ended, outcome = await _relay(request, ws, call)
    finally:
        registry.remove(session)
        if not call.done:
            call.cancel("the terminal's socket closed")
        detail = {"ended": ended, "duration": round(time.monotonic() - session.started, 3),
                  "bytes_in": call.bytes_out, "bytes_out": call.bytes_in, **outcome}
        write = asyncio.ensure_future(record("terminal.end", outcome.get("status", 200), detail))
        await asyncio.shield(write)
    return ws


async def _relay(request: web.Request, ws: web.WebSocketResponse,
                 call: Call) -> tuple[str, dict[str, Any]]:
    """Move bytes until either side ends; how it ended, and what to audit of it."""
    to_browser = asyncio.create_task(_to_browser(ws, call), name="terminal:out")
    from_browser = asyncio.create_task(_from_browser(ws, call), name="terminal:in")
    watch = asyncio.create_task(_watch_credential(request), name="terminal:auth")
    tasks = {to_browser: "agent", from_browser: "browser_closed", watch: "credential_revoked"}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(iter(done))
    how = tasks[first]
    if first is to_browser and not first.cancelled() and first.exception() is not None:
        how = "browser_closed"  # output could not be sent: the browser is gone or stuck
    if how != "agent":  # the browser left or lost its right: the agent ends the shell
        call.cancel("the browser closed the terminal" if how == "browser_closed"
                    else "the user's credential is no longer valid")
        if how == "credential_revoked" and not ws.closed:
            await ws.close(code=4001, message=b"credential no longer valid")
        return how, {}
    try:
        result = await call.wait(RESULT_WAIT)
    except RemoteError as exc:
        status = remote.STATUS.get(exc.code, 502)
        with contextlib.suppress(Exception):
            await ws.send_str(dumps({"type": "error", "code": exc.code, "status": status,
                                     "error": exc.reason or exc.code}))
            await ws.close(code=4000 + status, message=_close_text(exc.reason or exc.code))
        return "refused" if exc.code in ("denied", "busy", "unavailable") else exc.code, {
            "code": exc.code, "reason": exc.reason, "status": status}
    with contextlib.suppress(Exception):
        await ws.send_str(dumps({"type": "exit", **result}))
        await ws.close(code=1000, message=b"session ended")
    return str(result.get("ended") or "exit"), {"exit_status": result.get("exit_status")}


def _close_text(reason: str) -> bytes:
    """A close frame's reason is at most 123 bytes of UTF-8."""
    return reason.encode()[:123].decode(errors="ignore").encode()


async def _to_browser(ws: web.WebSocketResponse, call: Call) -> None:
    while (data := await call.receive()) is not None:
        async with asyncio.timeout(SEND_TIMEOUT):
            await ws.send_bytes(data)


async def _from_browser(ws: web.WebSocketResponse, call: Call) -> None:
    """Keys and controls until the browser closes; a bad control is answered, not fatal."""
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            data: bytes = msg.data
            for start in range(0, len(data), CHUNK):
                try:
                    await call.send(data[start:start + CHUNK])
                except RemoteError:
                    return  # the call is over; the agent's side ends the relay
        elif msg.type == WSMsgType.TEXT:
            try:
                control = CONTROL.validate(json.loads(msg.data), strict=True)
            except (ValueError, SchemaError) as exc:
                await ws.send_str(dumps({"type": "error", "status": 422,
                                         "error": f"bad control message: {exc}"[:300]}))
                continue
            call.signal("resize", {"cols": control["cols"], "rows": control["rows"]})
        else:
            return


async def _watch_credential(request: web.Request) -> None:
    """Returns when the socket's credential no longer admits it (signed out, key
    revoked, user disabled or demoted, another user behind the cookie)."""
    owner = context.principal(request)
    while True:
        await asyncio.sleep(REAUTH)
        try:
            principal = await resolve(request)
            authorize(Access.ADMIN, "GET", principal)
        except Denied:
            return
        if principal is None or (principal.user_id, principal.credential_id) != (
                owner.user_id, owner.credential_id):
            return


class _Auditor:
    """Writes the terminal's own audit records (the route is not audited by the
    middleware, which would write one record when the socket closes)."""

    def __init__(self, request: web.Request, principal: Principal, server_id: int) -> None:
        self.request = request
        self.principal = principal
        self.target = f"server:{server_id}"

    async def __call__(self, action: str, status: int, detail: dict[str, Any]) -> None:
        outcome = "success" if status < 400 else "denied" if status in (401, 403) else "failure"
        try:
            await audit.record(
                context.pool(self.request), action=action, outcome=outcome,
                actor_user_id=self.principal.user_id, actor=self.principal.username,
                principal_kind=self.principal.kind, target=self.target,
                ip=context.client_ip(self.request), status=status,
                request_id=self.request.get(context.REQUEST_ID), detail=detail,
            )
        except Exception:
            log.exception("could not write the audit record %s for %s", action, self.target)


ROUTES = [mint_token, terminal_ws]
