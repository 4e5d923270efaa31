"""The agent link's own WebSocket framing (hub/socket.py), byte by byte over real TCP.

A raw client does the upgrade and writes frames by hand, so the cases a library
client never produces are covered: frames split across reads, several in one
read, fragmented messages with a ping in between, unmasked frames, reserved
bits, an oversize length announced in a header, and the close handshake.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket as pysocket
import struct
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import Api
from tests.integration.agentlink import METRICS, hello
from tests.integration.test_enrollment import enroll

from beeyard.server import context
from beeyard.server.hub import agents, socket
from beeyard.server.hub.agents import HUB
from beeyard.shared import wire


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True,
          rsv: int = 0, length: int | None = None) -> bytes:
    """A client frame; ``length`` overrides the announced length."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawAgent:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, client: TestClient[Any, Any], token: str,
                      rcvbuf: int | None = None) -> RawAgent:
        raw = None
        if rcvbuf is not None:  # a small window, so that our side's buffer fills quickly
            raw = pysocket.socket()
            raw.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_RCVBUF, rcvbuf)
            raw.connect((client.server.host, client.server.port))
        reader, writer = await (
            asyncio.open_connection(sock=raw) if raw is not None
            else asyncio.open_connection(client.server.host, client.server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((
            "GET /api/agent/ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"sec-websocket-extensions" not in head.lower()  # none negotiated
        return cls(reader, writer)

    async def write(self, data: bytes, *, piecewise: bool = False) -> None:
        if piecewise:
            for i in range(len(data)):
                self.writer.write(data[i:i + 1])
                await self.writer.drain()
                await asyncio.sleep(0)
        else:
            self.writer.write(data)
            await self.writer.drain()

    async def read_frame(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """(opcode, payload) of the server's next frame; (-1, b"") at end of stream."""
        async with asyncio.timeout(timeout):
            try:
                b0, b1 = await self.reader.readexactly(2)
            except asyncio.IncompleteReadError:
                return -1, b""
            assert not b1 & 0x80, "server frames are never masked"
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            return b0 & 0x0F, await self.reader.readexactly(n)

    async def next_wire(self) -> wire.Frame:
        """The next binary message as a decoded wire frame (pings answered aside)."""
        while True:
            opcode, payload = await self.read_frame()
            assert opcode == 0x2, (opcode, payload)
            got = wire.decode(payload)
            if got.type != "ping":
                return got

    async def close_code(self) -> int:
        """Read to the server's close frame; its code. The stream must end after it."""
        while True:
            opcode, payload = await self.read_frame()
            assert opcode != -1, "the connection ended without a close frame"
            if opcode == 0x8:
                code: int = struct.unpack("!H", payload[:2])[0]
                assert (await self.read_frame())[0] == -1  # and the server closed TCP
                return code

    def close(self) -> None:
        self.writer.close()


async def _until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_split_joined_and_fragmented_frames_with_a_ping_inside(
    api: Api, client: TestClient[Any, Any]
) -> None:
    await api.login()
    server_id, token = await enroll(api)
    agent = await RawAgent.connect(client, token)
    await agent.write(frame(0x2, wire.encode("hello", hello())), piecewise=True)
    assert (await agent.next_wire()).type == "welcome"
    live = client.server.app[context.LIVE]
    now = time.time()
    one = wire.encode("sample", {"ts": now, "metrics": METRICS})
    two = wire.encode("sample", {"ts": now + 1, "metrics": METRICS})
    third = len(two) // 3
    await agent.write(  # one whole message, then one in three fragments with a ping inside
        frame(0x2, one) + frame(0x2, two[:third], fin=False) + frame(0x9, b"are you there")
        + frame(0x0, two[third:2 * third], fin=False) + frame(0x0, two[2 * third:]))
    assert await agent.read_frame() == (0xA, b"are you there")  # pong, while reassembling
    await _until(lambda: len(live.ring(server_id)) == 2)
    assert [ts for ts, _ in live.ring(server_id)] == [now, now + 1]
    await agent.write(frame(0x8, struct.pack("!H", 1000) + b"bye"))  # the close handshake
    assert await agent.close_code() == 1000
    await _until(lambda: not live.online(server_id))
    agent.close()


async def test_protocol_errors_close_the_link_with_the_reason(
    api: Api, client: TestClient[Any, Any]
) -> None:
    await api.login()
    server_id, token = await enroll(api)
    live = client.server.app[context.LIVE]
    cases = [
        (frame(0x2, b"x", mask=False), 1002),  # clients must mask
        (frame(0x2, b"x", rsv=0x40), 1002),  # no extension was negotiated
        (frame(0x9, b"x", fin=False), 1002),  # control frames are never fragmented
        (frame(0x0, b"x"), 1002),  # a continuation of nothing
        (frame(0x3, b"x"), 1002),  # a reserved opcode
        # An announced 1 TB message is refused from its header: no body is ever sent.
        (frame(0x2, b"", length=1 << 40)[:14], 1009),
        (frame(0x2, b"", length=wire.MAX_FRAME + 1)[:14], 1009),
    ]
    for data, code in cases:
        agent = await RawAgent.connect(client, token)
        await agent.write(frame(0x2, wire.encode("hello", hello())))
        assert (await agent.next_wire()).type == "welcome"
        assert live.online(server_id)
        await agent.write(data)
        assert await agent.close_code() == code, data[:16]
        await _until(lambda: not live.online(server_id))
        agent.close()
    # A text message is a bad frame like any other: counted, the link stays.
    agent = await RawAgent.connect(client, token)
    await agent.write(frame(0x1, b"hello?") + frame(0x2, wire.encode("hello", hello())))
    bye = await agent.next_wire()
    assert bye.type == "bye" and bye.body["code"] == "invalid_frame"
    assert "binary" in bye.body["reason"]
    assert await agent.close_code() == 1000
    agent.close()


async def test_an_agent_that_never_answers_the_close_is_cut_off(
    api: Api, client: TestClient[Any, Any]
) -> None:
    """The server's close waits for the agent's close frame only ``CLOSE_TIMEOUT``: an
    agent that never answers is disconnected anyway and its server marked offline."""
    await api.login()
    server_id, token = await enroll(api)
    agent = await RawAgent.connect(client, token)
    await agent.write(frame(0x2, wire.encode("hello", hello())))
    assert (await agent.next_wire()).type == "welcome"
    live = client.server.app[context.LIVE]
    assert live.online(server_id)
    started = time.monotonic()
    closing = asyncio.create_task(client.server.app[HUB].disconnect(
        server_id, "revoked", "gone", retry=False))
    bye = await agent.next_wire()
    assert bye.type == "bye" and bye.body == {"code": "revoked", "reason": "gone",
                                              "retry": False}
    opcode, payload = await agent.read_frame()
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1000
    assert (await agent.read_frame(timeout=agents.CLOSE_TIMEOUT + 5))[0] == -1  # TCP ends
    await closing
    assert time.monotonic() - started < agents.CLOSE_TIMEOUT + 2
    await _until(lambda: not live.online(server_id))
    agent.close()


async def test_frames_racing_ahead_of_the_hello_are_held_not_lost(
    api: Api, client: TestClient[Any, Any]
) -> None:
    """A hundred pings right behind the hello, in one write, while the server is still
    recording the hello: reading pauses after a few (memory stays bounded) and resumes
    once the link is up; every ping is answered, in order."""
    await api.login()
    _, token = await enroll(api)
    agent = await RawAgent.connect(client, token)
    pings = b"".join(frame(0x2, wire.encode("ping", {"ts": float(i)})) for i in range(100))
    await agent.write(frame(0x2, wire.encode("hello", hello())) + pings)
    assert (await agent.next_wire()).type == "welcome"
    answered = [(await agent.next_wire()).body["ts"] for _ in range(100)]
    assert answered == [float(i) for i in range(100)]
    agent.close()


@pytest.mark.parametrize(("payload", "answer"), [
    (struct.pack("!H", 1000) + b"bye", 1000),  # a proper close is echoed
    (struct.pack("!H", 4001), 4001),  # application codes too
    (b"\x03", 1002),  # one byte cannot hold a code
    (struct.pack("!H", 999), 1002),  # not a code a peer may send
    (struct.pack("!H", 1005), 1002),  # reserved for "no code"
    (struct.pack("!H", 1000) + b"\xff\xfe", 1007),  # the reason must be UTF-8
])
async def test_the_answer_to_a_close_frame_follows_the_rules(
    api: Api, client: TestClient[Any, Any], payload: bytes, answer: int
) -> None:
    await api.login()
    _, token = await enroll(api)
    agent = await RawAgent.connect(client, token)
    await agent.write(frame(0x2, wire.encode("hello", hello())))
    assert (await agent.next_wire()).type == "welcome"
    await agent.write(frame(0x8, payload))
    assert await agent.close_code() == answer
    agent.close()


async def test_a_message_in_too_many_fragments_is_refused(
    api: Api, client: TestClient[Any, Any]
) -> None:
    """Empty continuation frames cost memory without adding to the message's size: their
    number is capped too."""
    await api.login()
    _, token = await enroll(api)
    agent = await RawAgent.connect(client, token)
    await agent.write(frame(0x2, wire.encode("hello", hello())))
    assert (await agent.next_wire()).type == "welcome"
    flood = frame(0x2, b"", fin=False) + frame(0x0, b"", fin=False) * (socket.MAX_FRAGMENTS + 5)
    await agent.write(flood)
    assert await agent.close_code() == 1009
    agent.close()


async def test_a_failing_handler_closes_the_link_cleanly(
    api: Api, client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the hub (here: _dispatch raising on pings) closes that link with 1011; the
    frames behind it in the same read are not parsed from a cleared buffer."""
    await api.login()
    server_id, token = await enroll(api)
    agent = await RawAgent.connect(client, token)
    await agent.write(frame(0x2, wire.encode("hello", hello())))
    assert (await agent.next_wire()).type == "welcome"
    original = agents.AgentHub._dispatch

    def broken(self: agents.AgentHub, link: agents.Link, got: wire.Frame) -> bool:
        if got.type == "ping":
            raise RuntimeError("a bug")
        return original(self, link, got)

    monkeypatch.setattr(agents.AgentHub, "_dispatch", broken)
    ping = frame(0x2, wire.encode("ping", {"ts": 1.0}))
    await agent.write(ping * 3)
    assert await agent.close_code() == 1011
    live = client.server.app[context.LIVE]
    await _until(lambda: not live.online(server_id))
    assert "the agent link's handler failed" in caplog.text
    assert "Fatal error" not in caplog.text and "IndexError" not in caplog.text
    agent.close()


async def test_an_agent_that_stops_reading_cannot_grow_our_buffer_or_hold_its_link(
    api: Api, client: TestClient[Any, Any]
) -> None:
    """It floods pings and reads nothing: our pongs stop at the transport's high-water
    mark (one pending pong, the latest, is kept), and closing the link does not wait
    for the agent to read: it is cut off within the close timeout."""
    await api.login()
    server_id, token = await enroll(api)
    agent = await RawAgent.connect(client, token, rcvbuf=4096)
    await agent.write(frame(0x2, wire.encode("hello", hello())))
    assert (await agent.next_wire()).type == "welcome"
    hub = client.server.app[HUB]
    link = hub.links[server_id]
    ping = frame(0x9, b"p" * 125)
    for _ in range(200):  # up to 25 MB of pongs if each were answered
        await agent.write(ping * 1000)
        if not link.sock.writable:  # the agent's socket and our kernel buffer are full
            break
    await _until(lambda: not link.sock.writable)
    buffered = link.sock._transport.get_write_buffer_size()
    assert buffered < 256 * 1024, buffered
    started = time.monotonic()
    await asyncio.wait_for(hub.disconnect(server_id, "shutdown", "bye", retry=True),
                           agents.CLOSE_TIMEOUT + 5)
    assert time.monotonic() - started < agents.CLOSE_TIMEOUT + 3
    await _until(lambda: server_id not in hub.links)
    assert not client.server.app[context.LIVE].online(server_id)
    agent.close()
