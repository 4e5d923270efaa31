"""The agent link's WebSocket once upgraded: frames handled as the bytes arrive.

aiohttp does the upgrade (routing, the auth middleware, the handshake); then
``AgentSocket.take`` puts this protocol on the connection's transport and the
frames never go through ``WebSocketResponse.receive()`` again. Why: at 10,000
agents sending a frame a second each, the reading side of aiohttp's WebSocket
(its frame reader feeding a queue, a future resolved per message, the link's
task woken per message, a ``WSMessage`` per frame) was about a sixth of the
server's CPU and, worse, a task switch between every sample's arrival and its
handling. Here a complete message is handed to the hub's callback inside
``data_received``: one call, no task, no queue.

Only what an agent link needs of RFC 6455 on the server side is here: masked
client frames (an unmasked one is a protocol error), fragmented messages
reassembled up to ``max_size`` (a larger one is refused with 1009 from its
header, before its body is read), ping answered with pong, the close handshake
both ways, no extensions (the upgrade negotiates none). Writes go straight to
the transport; ``drain()`` waits while the transport is over its high-water
mark, so a peer that does not read makes its writers wait, not our memory grow.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
from collections.abc import Callable

from aiohttp import web

# The C masking function aiohttp's own frame reader uses (pure Python fallback inside).
from aiohttp._websocket.helpers import websocket_mask

log = logging.getLogger("beeyard.server.hub")

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA = (OP_TEXT, OP_BINARY)
CLOSE_PROTOCOL, CLOSE_TOO_BIG, CLOSE_INTERNAL = 1002, 1009, 1011
_LEN16 = struct.Struct("!H")
_LEN64 = struct.Struct("!Q")

EARLY_MAX = 16  # messages held before the hub reads them (the hello); beyond, reading pauses
EARLY_BYTES = 64 * 1024  # ...or this many bytes of them
MAX_FRAGMENTS = 1024  # frames one message may be split into
_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
                          1014))  # those a peer may send (RFC 6455 7.4); 3000-4999 too

Handler = Callable[[bytes, bool], None]
"""Called with each complete message and whether it was binary (False: text)."""


def frame_header(opcode: int, length: int) -> bytes:
    """A final, unmasked frame's header (server frames are never masked)."""
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return bytes((first, 126)) + _LEN16.pack(length)
    return bytes((first, 127)) + _LEN64.pack(length)


def _refusal(b0: int, b1: int, length: int, assembled: int, max_size: int,
             fragments: int) -> tuple[int, str] | None:
    """Why a frame with this header must end the link (close code, reason), or None."""
    opcode = b0 & 0x0F
    if b0 & 0x70:
        return CLOSE_PROTOCOL, "reserved bits set (no extension was negotiated)"
    if not b1 & 0x80:
        return CLOSE_PROTOCOL, "client frames must be masked"
    if opcode >= 0x8 and (not b0 & 0x80 or length > 125):
        return CLOSE_PROTOCOL, "a control frame must be final and at most 125 bytes"
    if opcode < 0x8 and assembled + length > max_size:
        return CLOSE_TOO_BIG, f"message over {max_size} bytes"
    if opcode == OP_CONT and fragments >= MAX_FRAGMENTS:
        return CLOSE_TOO_BIG, f"message in over {MAX_FRAGMENTS} fragments"
    return None


class AgentSocket(asyncio.Protocol):
    """One upgraded agent connection: messages out through a callback, frames in."""

    def __init__(self, transport: asyncio.Transport, http: asyncio.BaseProtocol,
                 max_size: int) -> None:
        self._transport = transport
        self._http = http  # aiohttp's protocol: told when the connection is lost
        self.max_size = max_size
        self._buf = bytearray()
        self._parts: list[bytes] = []  # a fragmented message being reassembled
        self._parts_size = 0
        self._parts_binary = True
        self._handler: Handler | None = None
        self._early: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._early_bytes = 0
        self._pong: bytes | None = None  # the latest ping's answer, while writes are paused
        self._first: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._stopped = False  # stop(): nothing more is read, whoever resumes
        self._early_full = False  # reading paused until the hub takes the early messages
        self._write_paused = False
        self._drainers: list[asyncio.Future[None]] = []
        self._close_sent = False
        self._close_received: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    def take(cls, request: web.Request, max_size: int) -> AgentSocket:
        """Take over the connection of ``request`` right after ``WebSocketResponse.prepare``.

        Nothing can arrive between the 101 and this call (no await in between). A client
        must not send before it has read the 101 (RFC 6455 4.1); bytes a client sent
        with its request anyway stay in aiohttp's reader, unread, and its hello times
        out with a ``bye`` saying so — ours never does that.
        """
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the agent went away during the upgrade")
        sock = cls(transport, request.protocol, max_size)
        transport.set_protocol(sock)
        return sock

    # -- reading ----------------------------------------------------------------

    async def first(self, within: float) -> tuple[bytes, bool] | None:
        """The first message (the hello), or None if the connection ended first.
        Raises TimeoutError after ``within`` seconds."""
        if not self._early and not self.ended.done():
            self._first = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(within):
                    await asyncio.wait({self._first, self.ended},
                                       return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._first = None
        return self._take_early() if self._early else None

    def _take_early(self) -> tuple[bytes, bool]:
        message = self._early.popleft()
        self._early_bytes -= len(message[0])
        return message

    def deliver(self, handler: Handler) -> None:
        """From now on hand every message to ``handler`` (those already read first)."""
        self._handler = handler
        if self._early_full:  # the hub reads now: what waited in the socket may come
            self._early_full = self._reading_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()
        while self._early and self._handler is not None and not self._reading_paused:
            self._call(*self._take_early())
        if not self._reading_paused and not self._stopped and not self._close_sent:
            self._parse()  # bytes left in the buffer while reading was paused

    def pause_reading(self) -> None:
        """Stop handing out messages (and reading the socket) until ``resume_reading``:
        the hub's backpressure when the ingest queue is full."""
        if not self._reading_paused and not self._stopped:
            self._reading_paused = True
            if not self._transport.is_closing():
                self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and not self._stopped and not self.ended.done():
            self._reading_paused = False
            self._transport.resume_reading()
            if self._handler is not None:
                self.deliver(self._handler)
            else:
                self._parse()

    def stop(self) -> None:
        """Drop every further message (the hub has decided to end the link); control
        frames are still read, so the peer's reply to our close is seen."""
        self._stopped = True
        self._handler = None
        self._early.clear()
        self._early_bytes = 0
        if self._reading_paused:
            self._reading_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()
            self._parse()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._reading_paused:
            self._parse()

    def _parse(self) -> None:
        buf = self._buf
        pos = 0
        end = len(buf)
        while not self._reading_paused and not self._close_sent and end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            head = pos + 2
            n = b1 & 0x7F
            if n == 126:
                if end - head < 2:
                    break
                n = _LEN16.unpack_from(buf, head)[0]
                head += 2
            elif n == 127:
                if end - head < 8:
                    break
                n = _LEN64.unpack_from(buf, head)[0]
                head += 8
            refusal = _refusal(b0, b1, n, self._parts_size, self.max_size, len(self._parts))
            if refusal is not None:
                self._fail(*refusal)
                return
            if end - head < 4 + n:
                break
            payload = buf[head + 4:head + 4 + n]
            websocket_mask(bytes(buf[head:head + 4]), payload)
            pos = head + 4 + n
            if not self._frame(b0 & 0x80, b0 & 0x0F, bytes(payload)):
                return
        del buf[:pos]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> bool:
        """Act on one frame; False when the link is over and parsing must stop."""
        if opcode in _DATA:
            if self._parts:
                self._fail(CLOSE_PROTOCOL, "a new message inside a fragmented one")
                return False
            if fin:
                self._message(payload, opcode == OP_BINARY)
            else:
                self._parts, self._parts_size = [payload], len(payload)
                self._parts_binary = opcode == OP_BINARY
        elif opcode == OP_CONT:
            if not self._parts:
                self._fail(CLOSE_PROTOCOL, "a continuation frame with nothing to continue")
                return False
            self._parts.append(payload)
            self._parts_size += len(payload)
            if fin:
                whole, self._parts, self._parts_size = b"".join(self._parts), [], 0
                self._message(whole, self._parts_binary)
        elif opcode == OP_PING:
            if self._write_paused:  # a peer that does not read gets one pong, the latest
                self._pong = payload
            else:
                self.write(payload, OP_PONG)
        elif opcode == OP_PONG:
            pass
        elif opcode == OP_CLOSE:
            self._peer_closed(payload)
            return False
        else:
            self._fail(CLOSE_PROTOCOL, f"unknown opcode {opcode:#x}")
            return False
        return not self.ended.done() and not self._close_sent

    def _message(self, payload: bytes, binary: bool) -> None:
        if self._stopped:
            return
        if self._handler is not None and not self._early:
            self._call(payload, binary)
            return
        self._early.append((payload, binary))
        self._early_bytes += len(payload)
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        if ((len(self._early) >= EARLY_MAX or self._early_bytes >= EARLY_BYTES)
                and not self._reading_paused):
            self.pause_reading()  # a peer racing ahead of its hello's handling
            self._early_full = True

    def _call(self, payload: bytes, binary: bool) -> None:
        if self._handler is None:
            return
        try:
            self._handler(payload, binary)
        except Exception:  # a bug of ours must not leave a half-handled link open
            log.exception("the agent link's handler failed; closing the link")
            self._fail(CLOSE_INTERNAL, "internal error")

    def _peer_closed(self, payload: bytes) -> None:
        reply = _close_reply(payload)
        if not self._close_received.done():
            self._close_received.set_result(None)
        if not self._close_sent:  # answer the close, then we (the server) close the TCP side
            self.write(reply, OP_CLOSE)
            self._close_sent = True
        self._buf.clear()
        self._drop()

    def _fail(self, code: int, reason: str) -> None:
        """A protocol error: say why in a close frame and drop the connection."""
        if not self._close_sent:
            self._close_sent = True
            self.write(_LEN16.pack(code) + _short(reason.encode()), OP_CLOSE)
        self._buf.clear()
        self._drop()

    # -- writing ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once a close frame went out or the connection is gone: nothing more is sent."""
        return self._close_sent or self.ended.done()

    def write(self, payload: bytes, opcode: int = OP_BINARY) -> None:
        """Queue one frame in the transport (never blocks; see ``drain``)."""
        if self._transport.is_closing():
            return
        if len(payload) < 4096:
            self._transport.write(frame_header(opcode, len(payload)) + payload)
        else:
            self._transport.writelines((frame_header(opcode, len(payload)), payload))

    @property
    def writable(self) -> bool:
        """Under the transport's high-water mark: a write now goes out without waiting."""
        return not self._write_paused

    async def drain(self) -> None:
        """Wait while the transport holds more than its high-water mark."""
        if self.ended.done():
            raise ConnectionResetError("the agent's connection is closed")
        if self._write_paused:
            fut = asyncio.get_running_loop().create_future()
            self._drainers.append(fut)
            await fut

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._pong is not None:
            pong, self._pong = self._pong, None
            self.write(pong, OP_PONG)
        self._wake_drainers(None)

    def _wake_drainers(self, exc: BaseException | None) -> None:
        drainers, self._drainers = self._drainers, []
        for fut in drainers:
            if not fut.done():
                fut.set_result(None) if exc is None else fut.set_exception(exc)

    async def close(self, code: int = 1000, message: bytes = b"", within: float = 3.0) -> None:
        """The close handshake: our close frame, the peer's within ``within`` s, then the TCP
        connection is closed: aborted (what is unsent discarded) if the peer is not reading,
        so a stuck agent cannot hold its link, or the server's shutdown, open. Safe to call
        more than once."""
        if not self._close_sent and not self.ended.done():
            self._close_sent = True
            self.write(_LEN16.pack(code) + _short(message), OP_CLOSE)
            self.stop()
            try:
                async with asyncio.timeout(within):
                    await asyncio.wait({self._close_received, self.ended},
                                       return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                pass
        if self.ended.done():
            return
        if self._transport.get_write_buffer_size():
            self._transport.abort()
        elif not self._transport.is_closing():
            self._transport.close()

    # -- the connection ---------------------------------------------------------

    def eof_received(self) -> bool:
        return False  # the peer half-closed: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._wake_drainers(ConnectionResetError("the agent's connection was lost"))
        if not self.ended.done():
            self.ended.set_result(None)
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        self._http.connection_lost(exc)  # aiohttp ends its handler's bookkeeping

    def _drop(self) -> None:
        """Close the TCP connection: gracefully, or at once if the peer is not reading
        (a graceful close would wait for it forever)."""
        if self._write_paused:
            self._transport.abort()
        else:
            self._transport.close()

    def __repr__(self) -> str:
        return f"<AgentSocket closed={self.closed} ended={self.ended.done()}>"


def _short(reason: bytes) -> bytes:
    """A close reason cut to 120 bytes without splitting a UTF-8 character."""
    return reason[:120].decode(errors="ignore").encode()


def _close_reply(payload: bytes) -> bytes:
    """The payload of our answer to the peer's close: its code echoed, or 1002/1007 for a
    close frame that breaks the rules (one byte, a code a peer may not send, a reason that
    is not UTF-8)."""
    if not payload:
        return b""
    code = _LEN16.unpack_from(payload)[0] if len(payload) >= 2 else 0
    if len(payload) == 1 or not (code in _CLOSE_CODES or 3000 <= code <= 4999):
        return _LEN16.pack(CLOSE_PROTOCOL) + b"invalid close frame"
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        return _LEN16.pack(1007) + b"close reason is not UTF-8"
    return payload[:2]
