"""A terminal client for tests and benchmarks: mint a channel token, open the socket,
type, read until a marker, and tell whether processes are still alive."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tests.conftest import Api


@dataclass
class Terminal:
    """One open terminal socket and everything it has shown so far."""

    ws: aiohttp.ClientWebSocketResponse
    output: bytearray = field(default_factory=bytearray)
    controls: list[dict[str, Any]] = field(default_factory=list)  # the server's text messages

    async def type(self, text: str | bytes) -> None:
        await self.ws.send_bytes(text.encode() if isinstance(text, str) else text)

    async def resize(self, cols: int, rows: int) -> None:
        await self.ws.send_str(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    async def read_until(self, pattern: str | bytes, within: float = 15) -> re.Match[bytes]:
        """Read output until ``pattern`` (a regex) matches output not seen before."""
        regex = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        start = len(self.output)
        try:
            async with asyncio.timeout(within):
                while True:
                    match = regex.search(self.output, start)
                    if match:
                        return match
                    if not await self._receive():
                        raise AssertionError(f"terminal closed before {pattern!r}: "
                                             f"{bytes(self.output[-400:])!r} {self.controls}")
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} within {within} s: "
                                 f"{bytes(self.output[-400:])!r} {self.controls}") from None

    async def _receive(self) -> bool:
        msg = await self.ws.receive()
        if msg.type == aiohttp.WSMsgType.BINARY:
            self.output += msg.data
        elif msg.type == aiohttp.WSMsgType.TEXT:
            self.controls.append(json.loads(msg.data))
        else:
            return False
        return True

    async def until_closed(self, within: float = 15) -> dict[str, Any]:
        """Read to the end; the server's last control message (exit or error)."""
        async with asyncio.timeout(within):
            while await self._receive():
                pass
        assert self.controls, f"closed without saying why: {bytes(self.output[-400:])!r}"
        return self.controls[-1]


async def mint(api: Api, server_id: int) -> str:
    status, body = await api.post(f"/api/ws/terminal/{server_id}/token")
    assert status == 200, body
    assert body["data"]["token"].startswith("bch_") and body["data"]["expires_in"] <= 30
    return str(body["data"]["token"])


async def connect(api: Api, server_id: int, token: str, cols: int = 80,
                  rows: int = 24) -> Terminal:
    ws = await api.client.ws_connect(
        f"/api/ws/terminal/{server_id}", params={"token": token, "cols": cols, "rows": rows},
        headers=api.headers)
    return Terminal(ws)


async def open_terminal(api: Api, server_id: int, cols: int = 80, rows: int = 24) -> Terminal:
    return await connect(api, server_id, await mint(api, server_id), cols, rows)


async def refused(api: Api, server_id: int, token: str) -> tuple[int, str]:
    """The HTTP status and error of an upgrade that should be refused (a real upgrade
    request, so the token is presented, but read as plain HTTP to see the body)."""
    headers = {**api.headers, "Connection": "Upgrade", "Upgrade": "websocket",
               "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    async with api.client.get(f"/api/ws/terminal/{server_id}", params={"token": token},
                              headers=headers) as resp:
        assert resp.status != 101, "the socket opened"
        return resp.status, str((await resp.json())["error"])


def alive(pids: list[int]) -> list[int]:
    """The pids that are running (a zombie, dead but not reaped by its parent, is not)."""
    out = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (ProcessLookupError, FileNotFoundError):
            continue
        if state not in (b"Z", b"X"):
            out.append(pid)
    return out


async def wait_dead(pids: list[int], within: float) -> float:
    """Seconds until every pid is gone; fails after ``within``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while alive(pids):
        assert loop.time() - start < within, f"still alive after {within} s: {alive(pids)}"
        await asyncio.sleep(0.02)
    return loop.time() - start
