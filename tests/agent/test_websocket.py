"""The agent's WebSocket client against a raw server written here byte by byte, for
what a well-behaved aiohttp server never sends: fragments, interleaved control
frames, masked or oversize frames, a wrong accept key, close codes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from tests.serverproc import REQUIRE_ALL

from beeyard.agent import websocket
from beeyard.agent.websocket import ConnectionClosed, HandshakeError, WebSocketError

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    flag = 0x80 if mask else 0
    if n < 126:
        head += bytes([flag | n])
    elif n < 65536:
        head += bytes([flag | 126]) + struct.pack("!H", n)
    else:
        head += bytes([flag | 127]) + struct.pack("!Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


async def read_client_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    assert b1 & 0x80, "client frames must be masked"
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    key = await reader.readexactly(4)
    data = await reader.readexactly(n)
    return b0 & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data))


async def handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    accept: str | None = None) -> dict[str, str]:
    headers: dict[str, str] = {}
    request = await reader.readuntil(b"\r\n\r\n")
    for line in request.decode().split("\r\n")[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    key = headers["sec-websocket-key"]
    digest = hashlib.sha1(key.encode() + websocket._GUID, usedforsecurity=False).digest()
    expected = base64.b64encode(digest).decode()
    writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\n"
                  f"Sec-WebSocket-Accept: {accept or expected}\r\n\r\n").encode())
    await writer.drain()
    return headers


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Script], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def serve(script: Script) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await script(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/api/agent/ws?x=1"

    yield serve
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_fragments_with_a_ping_between_are_one_message(raw_server: Callable[
        [Script], Awaitable[str]]) -> None:
    seen: dict[str, object] = {}

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["headers"] = await handshake(reader, writer)
        seen["request"] = True
        writer.write(frame(0x2, b"hel", fin=False))
        writer.write(frame(0x9, b"are you there"))  # a control frame between fragments
        writer.write(frame(0x0, b"lo ", fin=False))
        writer.write(frame(0x0, b"x" * 70_000))  # 64-bit length
        await writer.drain()
        seen["pong"] = await read_client_frame(reader)
        seen["message"] = await read_client_frame(reader)
        writer.write(frame(0x8, struct.pack("!H", 4000) + b"bye now"))
        await writer.drain()
        seen["close"] = await read_client_frame(reader)

    url = await raw_server(script)
    ws = await websocket.connect(url, headers={"Authorization": "Bearer t0ken"})
    assert await ws.receive() == b"hello " + b"x" * 70_000
    await ws.send(b"\x00\x01" * 200)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.receive()
    assert (closed.value.code, closed.value.reason) == (4000, "bye now")
    assert seen["pong"] == (0xA, b"are you there")
    assert seen["message"] == (0x2, b"\x00\x01" * 200)
    assert seen["close"] == (0x8, struct.pack("!H", 4000))
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["authorization"] == "Bearer t0ken"
    assert headers["sec-websocket-version"] == "13"


@pytest.mark.parametrize(("bad", "message"), [
    (frame(0x2, b"x", mask=b"abcd"), "must not be masked"),
    (bytes([0x82 | 0x40, 1]) + b"x", "reserved bits"),
    (frame(0x0, b"x"), "continuation frame without a message"),
    (frame(0x9, b"p", fin=False), "bad control frame"),
    (frame(0x3, b"x"), "unknown opcode"),
    (bytes([0x82, 127]) + struct.pack("!Q", 2**40), "larger than"),
])
async def test_protocol_violations_close_the_connection(
    raw_server: Callable[[Script], Awaitable[str]], bad: bytes, message: str
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        writer.write(bad)
        await writer.drain()
        await reader.read()

    ws = await websocket.connect(await raw_server(script), max_size=1024)
    with pytest.raises(ConnectionClosed, match=message):
        await ws.receive()
    assert ws.closed


async def test_a_wrong_accept_key_is_refused(
        raw_server: Callable[[Script], Awaitable[str]]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer, accept="bm90IHRoZSByaWdodCBrZXk=")

    with pytest.raises(WebSocketError, match="Sec-WebSocket-Accept does not match"):
        await websocket.connect(await raw_server(script))


async def test_a_refused_upgrade_carries_the_error_message(
        raw_server: Callable[[Script], Awaitable[str]]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"error": "unknown agent token"}'
        writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()

    with pytest.raises(HandshakeError) as refused:
        await websocket.connect(await raw_server(script))
    assert refused.value.status == 401
    assert refused.value.message == "unknown agent token"


async def test_a_server_that_vanishes_is_a_closed_connection(
        raw_server: Callable[[Script], Awaitable[str]]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        writer.write(frame(0x2, b"partial")[:4])  # then the TCP connection just ends

    ws = await websocket.connect(await raw_server(script))
    with pytest.raises(ConnectionClosed) as closed:
        await ws.receive()
    assert closed.value.code == 1006


async def test_not_http_and_bad_urls() -> None:
    with pytest.raises(WebSocketError, match="not a ws:// or wss:// URL"):
        await websocket.connect("http://127.0.0.1/")

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(WebSocketError, match="not an HTTP"):
            await websocket.connect(f"ws://127.0.0.1:{port}/")
    finally:
        server.close()
        await server.wait_closed()


def test_masking_round_trips() -> None:
    for payload in (b"", b"a", b"abcd", b"abcde", bytes(range(256)) * 40):
        key = b"\x01\x02\x03\x04"
        masked = websocket._mask(payload, key)
        assert websocket._mask(masked, key) == payload
        assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_client_frames_parse_back_at_every_length_encoding() -> None:
    """encode_frame's three header forms (7-bit, 16-bit and 64-bit lengths) and its
    masking, read back as RFC 6455 §5.2 says a server reads them."""
    import struct

    for n in (0, 1, 125, 126, 1025, 4095, 4096, 65535, 65536, 70001):
        payload = bytes((i * 7 + n) % 256 for i in range(n))
        for opcode, fin in ((websocket.OP_BINARY, True), (websocket.OP_CONT, False)):
            frame = websocket.encode_frame(opcode, payload, fin=fin)
            assert frame[0] == (0x80 if fin else 0) | opcode
            assert frame[1] & 0x80  # masked
            length, offset = frame[1] & 0x7F, 2
            if length == 126:
                length, offset = struct.unpack("!H", frame[2:4])[0], 4
            elif length == 127:
                length, offset = struct.unpack("!Q", frame[2:10])[0], 10
            assert length == n
            assert offset == (2 if n < 126 else 4 if n < 65536 else 10)
            key, body = frame[offset:offset + 4], frame[offset + 4:]
            assert len(body) == n
            assert bytes(b ^ key[i % 4] for i, b in enumerate(body)) == payload


def test_the_c_frame_encoder_gives_the_python_encoders_bytes() -> None:
    """_frame.encode (C) and encode_frame_py (the fallback) agree byte for byte at every
    length encoding and alignment, and encode_frame is the C one where it is built."""
    try:
        from beeyard.agent import _frame
    except ImportError as exc:
        if REQUIRE_ALL:
            pytest.fail(f"the C frame encoder is not built ({exc}) and BEEYARD_REQUIRE_ALL=1 "
                        "forbids skipping")
        pytest.skip(f"the C frame encoder is not built: {exc}")
    assert websocket._encode is _frame.encode
    for n in (0, 1, 3, 4, 7, 8, 9, 125, 126, 127, 1025, 65535, 65536, 70001):
        payload = bytes((i * 13 + n) % 256 for i in range(n))
        for key in (b"\x00\x00\x00\x00", b"\x01\x02\x03\x04", b"\xff\x80\x7f\x01"):
            for opcode, fin in ((websocket.OP_BINARY, True), (websocket.OP_CONT, False),
                                (websocket.OP_TEXT, True)):
                first = (0x80 if fin else 0) | opcode
                assert _frame.encode(first, payload, key) == websocket.encode_frame_py(
                    first, payload, key)
        assert _frame.encode(0x82, memoryview(payload), b"abcd") == _frame.encode(
            0x82, payload, b"abcd")
    with pytest.raises(ValueError, match="4 bytes"):
        _frame.encode(0x82, b"x", b"abc")
    with pytest.raises(ValueError, match="out of range"):
        _frame.encode(256, b"x", b"abcd")
