"""Asking a connected agent to do something: one ``Call`` per request frame.

A call is opened with ``AgentHub.call`` and lives until the agent's ``reply``
(or the link's end). Stream bytes the agent sends arrive in order through
``receive``; the call grants the agent credit only as they are consumed, so a
browser that reads slowly slows the agent down instead of growing our memory:
at most ``window`` bytes per call are ever buffered here. Input goes the other
way with ``send``, paced by the agent's credit (``frames.INPUT_WINDOW``).

The hub's reader hands frames to the call without awaiting anything, so one
slow call never holds up the link's other traffic.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Protocol

from beeyard.server.db import servers
from beeyard.shared.frames import CHUNK, INPUT_WINDOW
from beeyard.shared.operations import Operation

DEFAULT_WINDOW = 8 * CHUNK  # bytes an agent may send into a streaming call ahead of us


class RemoteError(Exception):
    """The call failed: ``code`` is the agent's error (``frames.ERRORS``) or one of
    ours (``offline``: no link; ``lost``: the link went during the call)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def early_refusal(pool: Any, server_id: int, capability: str) -> RemoteError | None:
    """Why the server refuses at once, without asking the agent: no such server
    (``not_found``), or its agent has not reported ``capability`` (``denied``). The
    record is the agent's last word, never an authority: the agent checks again."""
    allowed = await servers.capabilities(pool, server_id)
    if allowed is None:
        return RemoteError("not_found", f"server {server_id} not found")
    if capability not in allowed:
        return RemoteError("denied", f"server {server_id} does not allow {capability}: its "
                                     f"agent has not enabled that capability (the host's "
                                     f"operator turns it on in the agent's config or with "
                                     f"`beeyard-agent grant {capability}`)")
    return None


class Carrier(Protocol):
    """What a call needs of its link (``hub.agents.Link``)."""

    calls: dict[int, Call]

    def send(self, frame_type: str, body: dict[str, Any], id: int | None = None) -> bool: ...

    async def room(self) -> None: ...


class Call:
    """One operation in progress on an agent, as the API handler sees it."""

    def __init__(self, call_id: int, op: Operation, window: int, link: Carrier) -> None:
        self.id = call_id
        self.op = op
        self.window = window
        self._link = link
        link.calls[call_id] = self
        self.result: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._arrived = asyncio.Event()
        self._eof = False
        self._buffered = 0  # bytes received and not yet taken
        self._consumed = 0  # bytes taken since our last credit frame
        self._credit = INPUT_WINDOW  # input bytes we may still send
        self._credit_changed = asyncio.Event()
        self.bytes_in = 0  # stream bytes from the agent
        self.bytes_out = 0  # input bytes to the agent

    @property
    def done(self) -> bool:
        return self.result.done()

    async def wait(self, within: float | None = None) -> dict[str, Any]:
        """The agent's result, or ``RemoteError``; after ``within`` seconds the call is
        cancelled (the agent stops too) and ``timeout`` raised."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.result), within)
        except TimeoutError:
            self.cancel("no answer in time")
            raise RemoteError("timeout", f"the agent did not finish {self.op.name} within "
                                         f"{within:g} s") from None

    async def receive(self) -> bytes | None:
        """The next piece of the agent's stream; None once the call is over (then
        ``wait`` gives its result or error)."""
        while not self._chunks:
            if self._eof or self.result.done():
                return None
            self._arrived.clear()
            await self._arrived.wait()
        data = self._chunks.popleft()
        self._buffered -= len(data)
        self._consumed += len(data)
        if self._consumed >= self.window // 2 and not self.result.done():
            grant, self._consumed = self._consumed, 0
            self._link.send("credit", {"bytes": grant}, self.id)
        return data

    async def send(self, data: bytes, *, eof: bool = False) -> None:
        """Send input (keys, an upload's bytes), pacing on the agent's credit."""
        if not data and not eof:
            return  # nothing to say (an empty WebSocket message): the agent refuses those
        view = memoryview(data)
        while True:
            piece, view = bytes(view[:CHUNK]), view[CHUNK:]
            while self._credit < len(piece) and not self.result.done():
                self._credit_changed.clear()
                await self._credit_changed.wait()
            if self.result.done():
                raise RemoteError("cancelled", f"{self.op.name} is already over")
            await self._link.room()  # many small pieces (keys) must not flood its queue
            self._credit -= len(piece)
            self.bytes_out += len(piece)
            if not self._link.send("data", {"data": piece, "eof": eof and not view}, self.id):
                raise RemoteError("lost", "the link to the agent closed")
            if not view:
                return

    def signal(self, name: str, args: dict[str, Any]) -> None:
        if not self.result.done():
            self._link.send("signal", {"name": name, "args": args}, self.id)

    def cancel(self, reason: str) -> None:
        """Ask the agent to stop; the call is over for us at once."""
        if not self.result.done():
            self._link.send("cancel", {"reason": reason[:256]}, self.id)
            self._finish(RemoteError("cancelled", reason))

    # -- fed by the hub's reader (never awaits) ---------------------------------

    def on_data(self, data: bytes, eof: bool) -> bool:
        """Queue stream bytes; False if the agent overran its window (a bad peer)."""
        if not self.op.streams or self._buffered > self.window + CHUNK:
            return False
        self._chunks.append(data)
        self._buffered += len(data)
        self.bytes_in += len(data)
        self._eof = self._eof or eof
        self._arrived.set()
        return True

    def on_credit(self, amount: int) -> None:
        self._credit += amount
        self._credit_changed.set()

    def on_reply(self, body: dict[str, Any]) -> None:
        if body["ok"]:
            self._finish(body.get("result") or {})
        else:
            self._finish(RemoteError(body.get("error") or "failed", body.get("reason") or ""))

    def _finish(self, outcome: dict[str, Any] | RemoteError) -> None:
        if not self.result.done():
            if isinstance(outcome, RemoteError):
                self.result.set_exception(outcome)
                self.result.exception()  # retrieved: no "never retrieved" warning
            else:
                self.result.set_result(outcome)
        self._arrived.set()
        self._credit_changed.set()
        self._link.calls.pop(self.id, None)
