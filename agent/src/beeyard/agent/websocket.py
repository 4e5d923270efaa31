"""A small RFC 6455 WebSocket client on asyncio streams: the agent's only connection.

Why not aiohttp's client: importing it costs about 14 MB of resident memory on
this kind of machine (measured: asyncio+ssl+psutil+msgpack 22 MB, plus aiohttp
36 MB), which alone would break the agent's 28 MB budget. The agent needs a
tiny subset of the protocol — one client connection, binary messages, no
extensions, no subprotocols — which fits in this module.

What it does: the HTTP/1.1 upgrade with the ``Sec-WebSocket-Accept`` check
(a refused upgrade raises ``HandshakeError`` with the status and the server's
``{"error": ...}`` message, so a 401 can stop the agent with the reason),
masked client frames, fragmented messages reassembled up to ``max_size``,
control frames (ping answered with pong, close answered and reported as
``ConnectionClosed``). Text messages are returned as their UTF-8 bytes: the
agent's decoder refuses them with a precise error like any other bad frame.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import struct
from typing import Any
from urllib.parse import urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEADER_LINE = 8192
_MAX_HEADERS = 100
_MAX_ERROR_BODY = 65536

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketError(Exception):
    """The connection failed or the peer broke the protocol."""


class HandshakeError(WebSocketError):
    """The server answered the upgrade with something other than 101.

    ``status`` is the HTTP status; ``message`` is the server's ``error`` text
    when its body was our JSON envelope, else the HTTP reason phrase.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class ConnectionClosed(WebSocketError):
    """The peer closed the connection (``code`` 1006 when it just went away)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


_LANES: dict[int, int] = {}  # length -> an integer with 1 in every 4th byte, for that length


def _mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``key``, as one big-integer operation
    (a Python-level byte loop would cost a millisecond per few kilobytes).

    Small frames (a live sample, ~1 KB) XOR with the key repeated as bytes: one
    repetition and two conversions. Big frames (file chunks) use ``key * lanes``
    (1 in every 4th byte: no carries) with ``lanes`` kept per length: file chunks
    have a handful of lengths, and building the repeated key as bytes and
    converting it was a third of the cost of sending one (145 MB/s to about
    300 MB/s for 256 KiB frames on the benchmark VM)."""
    n = len(payload)
    if n == 0:
        return payload
    whole = -(-n // 4) * 4  # the key's last repetition may reach past the payload
    if whole < 4096:
        value = int.from_bytes(payload, "little") ^ int.from_bytes(key * (whole // 4), "little")
    else:
        lanes = _LANES.get(whole)
        if lanes is None:
            lanes = int.from_bytes(b"\x01\x00\x00\x00" * (whole // 4), "little")
            if len(_LANES) >= 16:
                _LANES.clear()
            _LANES[whole] = lanes
        value = int.from_bytes(payload, "little") ^ (int.from_bytes(key, "little") * lanes)
    masked = value.to_bytes(whole, "little")
    return masked if whole == n else masked[:n]


class _MaskKeys:
    """Masking keys from ``os.urandom``, 256 bytes (64 keys) per system call rather
    than 4 bytes per frame: the keys stay unpredictable, as RFC 6455 §5.3 asks,
    and a live sample a second costs one ``getrandom`` a minute, not one a frame."""

    def __init__(self) -> None:
        self._pool = b""
        self._next = 0

    def take(self) -> bytes:
        start = self._next
        if start >= len(self._pool):
            self._pool = os.urandom(256)
            start = 0
        self._next = start + 4
        return self._pool[start:start + 4]


_keys = _MaskKeys()


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One masked client frame (clients must mask, RFC 6455 §5.3): in C where
    ``_frame`` is built (42 → 22 µs cold for a live sample), else ``encode_frame_py``."""
    return _encode((0x80 | opcode) if fin else opcode, payload, _keys.take())


def binary_frame(payload: bytes, key: bytes | None = None) -> bytes:
    """A final binary frame, masked with a fresh key unless one is given (tests)."""
    return _encode(0x82, payload, _keys.take() if key is None else key)


def encode_frame_py(first: int, payload: bytes, key: bytes) -> bytes:
    """``_frame.encode`` in Python: the fallback, and the reference it is tested
    against. ``first``: the first header byte (FIN and opcode)."""
    n = len(payload)
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = _HEAD16(first, 0x80 | 126, n)
    else:
        head = _HEAD64(first, 0x80 | 127, n)
    return head + key + _mask(payload, key)


try:
    from beeyard.agent._frame import encode as _encode
except ImportError:  # not built here (no C compiler at install): the same bytes, slower
    _encode = encode_frame_py


_HEAD16 = struct.Struct("!BBH").pack
_HEAD64 = struct.Struct("!BBQ").pack


def accept_key(key: str) -> str:
    # SHA-1 is what RFC 6455 defines for this handshake check; it protects nothing secret.
    digest = hashlib.sha1(key.encode() + _GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


class WebSocket:
    """An open client connection. ``receive`` must be called from one task only;
    ``send`` may be called from any task (each frame is one buffered write)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_size: int
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._transport = writer.transport  # written to directly: one call fewer
        self._max_size = max_size
        self._closed: ConnectionClosed | None = None

    @property
    def closed(self) -> bool:
        return self._closed is not None or self._writer.is_closing()

    async def send(self, data: bytes) -> None:
        """Send one binary message and wait for the write buffer to drain."""
        self.send_nowait(data)
        await self._drain()

    def send_nowait(self, data: bytes) -> None:
        """Queue one binary message without waiting."""
        if self._closed is not None:
            raise self._closed
        if self._transport.is_closing():
            raise self._gone("connection closing")
        self._transport.write(encode_frame(OP_BINARY, data))

    def offer_frame(self, frame: bytes, limit: int) -> bool:
        """Queue one whole frame already encoded and masked (``binary_frame``) unless
        the connection is closing or more than ``limit`` bytes are still queued: for
        data worth nothing late (a live sample), dropped rather than queued without
        bound on a slow link. The transport is written directly, one call fewer than
        through the StreamWriter, as this runs every second."""
        transport = self._transport
        if (self._closed is not None or transport.is_closing()
                or transport.get_write_buffer_size() > limit):
            return False
        transport.write(frame)
        return True

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise self._gone(f"write failed: {exc}") from None

    def _gone(self, reason: str) -> ConnectionClosed:
        if self._closed is None:
            self._closed = ConnectionClosed(1006, reason)
        return self._closed

    async def receive(self) -> bytes:
        """The next data message (binary, or text as UTF-8 bytes). Answers pings on
        the way; raises ``ConnectionClosed`` when the peer closes or vanishes."""
        if self._closed is not None:
            raise self._closed
        message = bytearray()
        message_op: int | None = None
        while True:
            fin, opcode, payload = await self._read_frame()
            if fin and message_op is None and opcode in (OP_TEXT, OP_BINARY):
                return payload  # the usual case, a whole message in one frame: no copy
            if opcode >= 0x8:  # control frames may arrive between fragments
                await self._control(opcode, payload)
                continue
            if opcode == OP_CONT:
                if message_op is None:
                    raise await self._fail(1002, "continuation frame without a message")
            elif message_op is not None:
                raise await self._fail(1002, "new message inside a fragmented one")
            elif opcode in (OP_TEXT, OP_BINARY):
                message_op = opcode
            else:
                raise await self._fail(1002, f"unknown opcode {opcode}")
            if len(message) + len(payload) > self._max_size:
                raise await self._fail(1009, f"message larger than {self._max_size} bytes")
            message += payload
            if fin:
                return bytes(message)

    async def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._writer.write(encode_frame(OP_PONG, payload))
            await self._drain()
        elif opcode == OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            reason = payload[2:].decode("utf-8", "replace")
            if not self._writer.is_closing():
                try:
                    self._writer.write(encode_frame(OP_CLOSE, payload[:2]))
                    await asyncio.wait_for(self._writer.drain(), 1.0)
                except (ConnectionError, OSError, TimeoutError):
                    pass
                self._writer.close()
            self._closed = ConnectionClosed(code, reason)
            raise self._closed
        elif opcode != OP_PONG:
            raise await self._fail(1002, f"unknown control opcode {opcode}")

    async def _read_frame(self) -> tuple[bool, int, bytes]:
        try:
            b0, b1 = await self._reader.readexactly(2)
            if b1 & 0x80:
                raise await self._fail(1002, "server frames must not be masked")
            if b0 & 0x70:
                raise await self._fail(1002, "reserved bits set without an extension")
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self._reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self._reader.readexactly(8))[0]
            opcode = b0 & 0x0F
            fin = bool(b0 & 0x80)
            if opcode >= 0x8 and (n > 125 or not fin):
                raise await self._fail(1002, "bad control frame")
            if n > self._max_size:
                raise await self._fail(1009, f"frame larger than {self._max_size} bytes")
            payload = await self._reader.readexactly(n) if n else b""
        except asyncio.IncompleteReadError:
            raise self._gone("connection lost") from None
        except (ConnectionError, OSError) as exc:
            raise self._gone(f"read failed: {exc}") from None
        return fin, opcode, payload

    async def _fail(self, code: int, reason: str) -> ConnectionClosed:
        await self.close(code, reason)
        self._closed = ConnectionClosed(code, reason)
        return self._closed

    async def close(self, code: int = 1000, reason: str = "", grace: float = 2.0) -> None:
        """Send a close frame (once), wait briefly for the buffer to drain, and close."""
        if not self._writer.is_closing():
            try:
                payload = struct.pack("!H", code) + reason.encode()[:120]
                self._writer.write(encode_frame(OP_CLOSE, payload))
                await asyncio.wait_for(self._writer.drain(), grace)
            except (ConnectionError, OSError, TimeoutError):
                pass
            self._writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), grace)
        if self._closed is None:
            self._closed = ConnectionClosed(code, reason)


async def connect(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    connect_timeout: float = 15.0,
    max_size: int = 4 * 1024 * 1024,
    ssl_context: Any = None,
) -> WebSocket:
    """Open ``ws://`` or ``wss://`` ``url``. Raises ``HandshakeError`` when the server
    refuses the upgrade, ``WebSocketError`` (or ``OSError``/``TimeoutError``) otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise WebSocketError(f"not a ws:// or wss:// URL: {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    ssl_arg: Any = None
    if secure:
        if ssl_context is None:
            import ssl  # loaded only for wss (asyncio has it loaded anyway)

            ssl_context = ssl.create_default_context()
        ssl_arg = ssl_context
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            parts.hostname, port, ssl=ssl_arg, limit=max_size + 16,
            server_hostname=parts.hostname if secure else None,
        ),
        connect_timeout,
    )
    try:
        await asyncio.wait_for(
            _handshake(reader, writer, parts, headers or {}), connect_timeout)
    except BaseException:
        writer.close()
        raise
    return WebSocket(reader, writer, max_size)


async def _handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    parts: Any,
    headers: dict[str, str],
) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    default_port = 443 if parts.scheme == "wss" else 80
    if parts.port and parts.port != default_port:
        host = f"{host}:{parts.port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    for name, value in headers.items():
        if any(c in name + value for c in "\r\n"):
            raise WebSocketError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()

    status_line = await _read_line(reader)
    try:
        version, status_text, *rest = status_line.split(" ", 2)
        status = int(status_text)
    except ValueError:
        raise WebSocketError(f"not an HTTP response: {status_line[:80]!r}") from None
    if not version.startswith("HTTP/1."):
        raise WebSocketError(f"not an HTTP/1.x response: {status_line[:80]!r}")
    phrase = rest[0] if rest else ""
    response_headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS + 1):
        line = await _read_line(reader)
        if not line:
            break
        name, _, value = line.partition(":")
        response_headers[name.strip().lower()] = value.strip()
    else:
        raise WebSocketError("too many response headers")

    if status != 101:
        raise HandshakeError(status, await _error_message(reader, response_headers, phrase))
    if response_headers.get("upgrade", "").lower() != "websocket":
        raise WebSocketError("the server did not upgrade to websocket")
    if response_headers.get("sec-websocket-accept") != accept_key(key):
        raise WebSocketError("the server's Sec-WebSocket-Accept does not match")
    if response_headers.get("sec-websocket-extensions"):
        raise WebSocketError("the server chose an extension this client did not offer")


async def _read_line(reader: asyncio.StreamReader) -> str:
    try:
        line = await reader.readuntil(b"\r\n")
    except asyncio.IncompleteReadError:
        raise WebSocketError("connection closed during the handshake") from None
    except asyncio.LimitOverrunError:
        raise WebSocketError("response header line too long") from None
    if len(line) > _MAX_HEADER_LINE:
        raise WebSocketError("response header line too long")
    return line[:-2].decode("latin-1")


async def _error_message(
    reader: asyncio.StreamReader, headers: dict[str, str], phrase: str
) -> str:
    """The ``error`` of a JSON envelope body when there is one (bounded read)."""
    try:
        length = min(int(headers.get("content-length", "0")), _MAX_ERROR_BODY)
    except ValueError:
        length = 0
    if length <= 0:
        return phrase or "refused"
    try:
        body = await asyncio.wait_for(reader.readexactly(length), 5.0)
        data = json.loads(body)
    except (asyncio.IncompleteReadError, TimeoutError, ValueError, OSError):
        return phrase or "refused"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, str):
        return error[:1024]
    return phrase or "refused"
