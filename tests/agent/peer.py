"""A real local server speaking the agent protocol, for the agent's link tests.

Until the real ``/api/agent/ws`` exists this stands in for it — a real aiohttp
server on loopback, speaking the real frames through ``beeyard.shared.wire``,
never a mock of the agent's own code. Each test scripts it through plain
attributes (refuse the upgrade, stay silent, withhold acks) and reads what the
agent sent from ``frames``. It also answers ``POST /api/agent/register`` with
the contract the agent assumes, so enrollment runs end to end against it.

``AgentProcess`` runs ``beeyard-agent run`` as a real process and stops it by
its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from beeyard.agent.config import AgentConfig, SpoolConfig
from beeyard.agent.token import write_token
from beeyard.shared import wire


@dataclass
class Received:
    conn: int
    frame: wire.Frame
    at: float = field(default_factory=time.monotonic)  # when the peer decoded it


@dataclass
class AgentPeer:
    """Script it through its attributes; ``frames`` collects every decoded frame."""

    heartbeat: float = 1.0
    server_id: int = 7
    tokens: set[str] = field(default_factory=lambda: {"bag_" + secrets.token_urlsafe(32)})
    refuse_status: int | None = None  # answer the upgrade with this status
    refuse_message: str = "token revoked"
    welcome: bool = True  # answer hello with welcome
    answer_pings: bool = True
    ack: bool = True  # ack every summary after "committing" it
    enroll_codes: dict[str, int] = field(default_factory=dict)  # code -> server id
    connections: int = 0
    upgrades_refused: int = 0
    frames: list[Received] = field(default_factory=list)
    committed: list[int] = field(default_factory=list)
    registrations: list[dict[str, Any]] = field(default_factory=list)
    current: web.WebSocketResponse | None = None
    url: str = ""
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition | None = None

    @property
    def token(self) -> str:
        return next(iter(self.tokens))

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        self._arrived = asyncio.Condition()
        app = web.Application()
        app.router.add_get("/api/agent/ws", self._ws)
        app.router.add_post("/api/agent/register", self._register)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _register(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.registrations.append(body)
        server_id = self.enroll_codes.pop(body.get("code"), None)
        if server_id is None:
            return web.json_response({"error": "invalid or expired enrollment code"}, status=400)
        token = "bag_" + secrets.token_urlsafe(32)
        self.tokens = {token}
        return web.json_response({"data": {"server_id": server_id, "token": token}}, status=201)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_status is not None:
            self.upgrades_refused += 1
            return web.json_response({"error": self.refuse_message}, status=self.refuse_status)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            self.upgrades_refused += 1
            return web.json_response({"error": "unknown agent token"}, status=401)
        ws = web.WebSocketResponse(max_msg_size=wire.MAX_FRAME)
        await ws.prepare(request)
        self.connections += 1
        conn = self.connections
        self.current = ws
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    continue
                frame = wire.decode(msg.data)  # the agent must only ever send valid frames
                await self._record(conn, frame)
                await self._answer(ws, frame)
        finally:
            if self.current is ws:
                self.current = None
        return ws

    async def _record(self, conn: int, frame: wire.Frame) -> None:
        assert self._arrived is not None
        async with self._arrived:
            self.frames.append(Received(conn, frame))
            self._arrived.notify_all()

    async def _answer(self, ws: web.WebSocketResponse, frame: wire.Frame) -> None:
        if frame.type == "hello" and self.welcome:
            await ws.send_bytes(wire.encode("welcome", {
                "server_id": self.server_id, "protocol": wire.PROTOCOL_VERSION,
                "heartbeat": self.heartbeat}))
        elif frame.type == "ping" and self.answer_pings:
            await ws.send_bytes(wire.encode("pong", frame.body))
        elif frame.type == "summary" and self.ack:
            self.committed.append(frame.body["minute"])
            await ws.send_bytes(wire.encode("ack", {"minutes": [frame.body["minute"]]}))

    async def send(self, frame_type: str, body: dict[str, Any], id: int | None = None) -> None:
        await self.send_raw(wire.encode(frame_type, body, id=id))

    async def send_raw(self, data: bytes) -> None:
        assert self.current is not None, "no agent connected"
        await self.current.send_bytes(data)

    async def wait_for(
        self, frame_type: str, *, conn: int | None = None, count: int = 1, timeout: float = 20.0
    ) -> list[Received]:
        """Wait until ``count`` frames of ``frame_type`` (on connection ``conn``) arrived."""
        assert self._arrived is not None

        def matching() -> list[Received]:
            return [r for r in self.frames if r.frame.type == frame_type
                    and (conn is None or r.conn == conn)]

        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(matching()) >= count)
        return matching()

    async def reply(self, call_id: int, timeout: float = 20.0) -> dict[str, Any]:
        """The agent's one reply to call ``call_id`` (it must answer each call once)."""
        found = await self.wait_for_id("reply", call_id, timeout)
        return found.frame.body

    async def wait_for_id(self, frame_type: str, frame_id: int,
                          timeout: float = 20.0) -> Received:
        assert self._arrived is not None

        def matching() -> list[Received]:
            return [r for r in self.frames if r.frame.type == frame_type
                    and r.frame.id == frame_id]

        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(matching()) >= 1)
        await asyncio.sleep(0.05)  # a second answer to the same call would show now
        found = matching()
        assert len(found) == 1, f"{frame_type} {frame_id} arrived {len(found)} times"
        return found[0]

    async def wait_connections(self, n: int, timeout: float = 20.0) -> None:
        """Wait until ``n`` connections have said hello."""
        await self.wait_for("hello", count=n, timeout=timeout)


def write_config(tmp: Path, server: str, token: str, **overrides: Any) -> Path:
    """A config and token as ``enroll`` would write them, in ``tmp``."""
    spool = overrides.pop("spool", None) or SpoolConfig(tmp / "spool")
    overrides.setdefault("summary_spread", 0.0)  # summaries at once unless a test spreads them
    overrides.setdefault("server_id", 7)
    config = AgentConfig(server=server, token_file=tmp / "agent.token", spool=spool,
                         **overrides)
    write_token(config.token_file, token)
    path = tmp / "agent.toml"
    path.write_text(config.to_toml())
    return path


class AgentProcess:
    """``beeyard-agent run`` as a real process; output goes to a log file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self._log_file = log.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BEEYARD_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "beeyard.agent.cli", "run", "--config", str(config),
             "--log-level", "debug"],
            stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait(self, timeout: float = 20.0) -> int:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.proc.poll() is None:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"agent still running; log:\n{self.output()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        """Kill by PID if still running (tests that expect an exit check it first)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._log_file.close()


def self_signed(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1 (its own CA) and a server context using it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "beeyard test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return cert_path, context
