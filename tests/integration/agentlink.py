"""A protocol-level agent for tests: a real WebSocket client speaking wire frames."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from beeyard.shared import wire

HOST: dict[str, Any] = {
    "hostname": "web-1", "os": "Debian GNU/Linux 12", "kernel": "6.1.0", "arch": "x86_64",
    "cores": 4, "boot_time": 1_700_000_000.0, "addresses": ["10.0.0.5"],
}

METRICS: dict[str, Any] = {
    "cpu": 12.5, "cpu_cores": [10.0, 15.0], "load": [0.5, 0.4, 0.3],
    "memory": {"total": 8e9, "used": 2e9, "available": 6e9, "percent": 25.0},
    "swap": {"total": 1e9, "used": 0.0, "percent": 0.0},
    "net_total": {"rx_bps": 1000.0, "tx_bps": 500.0, "rx_bytes": 1e6, "tx_bytes": 5e5},
    "connections": {"tcp": 10, "udp": 2}, "processes": 120, "uptime": 3600.0,
}


def hello(protocol: str = wire.PROTOCOL_VERSION, interval: float = 1.0) -> dict[str, Any]:
    return {"protocol": protocol, "agent_version": "0.1.0", "host": HOST,
            "capabilities": ["docker_read"], "interval": interval}


def summary(minute: int, cpu: float = 10.0) -> dict[str, Any]:
    return {"minute": minute, "samples": 60, "net_rx_bytes": 1000.0, "net_tx_bytes": 2000.0,
            "values": {"cpu": [cpu, cpu - 5, cpu + 5], "load1": [0.5, 0.1, 0.9],
                       "gpu_utilization": None}}


class FakeAgent:
    """One link: ``send``/``recv`` of decoded frames; pings are answered while receiving."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.answer_pings = True

    @classmethod
    async def connect(cls, client: TestClient[Any, Any], token: str) -> FakeAgent:
        ws = await client.ws_connect("/api/agent/ws",
                                     headers={"Authorization": f"Bearer {token}"})
        return cls(ws)

    @classmethod
    async def start(cls, client: TestClient[Any, Any], token: str, **kw: Any) -> tuple[
            FakeAgent, wire.Frame]:
        """Connect and say hello; returns the agent and the welcome frame."""
        agent = await cls.connect(client, token)
        await agent.send("hello", hello(**kw))
        return agent, await agent.recv()

    async def send(self, frame_type: str, body: dict[str, Any], id: int | None = None) -> None:
        await self.ws.send_bytes(wire.encode(frame_type, body, id))

    async def recv(self, timeout: float = 10.0, *, skip: tuple[str, ...] = ("ping",)) -> wire.Frame:
        """The next frame not in ``skip`` (pings are answered with pong unless told not to)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type != aiohttp.WSMsgType.BINARY:
                raise ConnectionError(f"link closed: {msg.type.name}")
            frame = wire.decode(msg.data)
            if frame.type == "ping" and self.answer_pings:
                await self.send("pong", {"ts": frame.body["ts"]})
            if frame.type not in skip:
                return frame

    async def closed(self, timeout: float = 15.0) -> list[wire.Frame]:
        """Read until the server closes the link; the frames it sent meanwhile."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type != aiohttp.WSMsgType.BINARY:
                return frames
            frames.append(wire.decode(msg.data))
