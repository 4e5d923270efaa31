"""Carrying out what the server asks: one ``Call`` per ``request`` frame.

The server's request is only ever a *request*. For each one the dispatcher

1. looks the operation up in ``beeyard.shared.operations`` (unknown: ``unknown_op``),
2. checks it against the agent's own policy at this moment, the config's
   capabilities and the unexpired local grants (``grants.effective``), read again
   for every request (lacking: ``denied``, with the capability and how to turn it on),
3. validates the arguments against the operation's declaration (bad: ``invalid``),
4. runs the area's handler (``beeyard.agent.operations.<area>.HANDLERS``, imported
   on first use, so what is never asked for is never loaded) in a task of its own,
   and answers its result or its ``Refused`` as the one ``reply``.

Handlers raise ``Refused`` for every refusal they decide themselves (a path outside
the roots, a missing container); any other exception is a bug, logged with its
traceback and answered as ``failed`` without the details. When the link goes, every
call is cancelled: a handler's ``finally`` kills what it started (shells, commands).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from beeyard.agent.config import AgentConfig
from beeyard.shared import wire
from beeyard.shared.frames import CHUNK, INPUT_WINDOW
from beeyard.shared.operations import Operation, UnknownOperation, lookup
from beeyard.shared.schema import SchemaError

log = logging.getLogger("beeyard.agent.operations")

MAX_CALLS = 64  # calls in progress per link; beyond, the agent answers busy
CANCEL_GRACE = 2.0  # seconds a cancelled handler has to clean up before we stop waiting

Send = Callable[[bytes], Awaitable[None]]


class Refused(Exception):
    """A handler's answer that the call cannot be done: ``code`` is one of
    ``frames.ERRORS``, ``reason`` says why in words a person can act on."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Call:
    """One request in progress, as its handler sees it."""

    def __init__(self, call_id: int, op: Operation, args: dict[str, Any], window: int,
                 config: AgentConfig, send: Send) -> None:
        self.id = call_id
        self.op = op
        self.args = args
        self.config = config
        self._send = send
        self._credit = window  # bytes we may still send before the server grants more
        self._credit_changed = asyncio.Event()
        self._input: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._input_allowed = INPUT_WINDOW  # bytes the server may still send us
        self._consumed = 0  # input consumed since our last credit frame
        self._on_signal: Callable[[str, Mapping[str, Any]], None] | None = None
        self._early_signals: list[tuple[str, Mapping[str, Any]]] = []
        self.failure: Refused | None = None  # why the dispatcher stopped this call

    @property
    def on_signal(self) -> Callable[[str, Mapping[str, Any]], None] | None:
        return self._on_signal

    @on_signal.setter
    def on_signal(self, fn: Callable[[str, Mapping[str, Any]], None] | None) -> None:
        """Set the signal handler, and give it the signals that arrived before it was
        set (the frames after a request can arrive before its handler has run)."""
        self._on_signal = fn
        early, self._early_signals = self._early_signals, []
        if fn is not None:
            for name, args in early:
                fn(name, args)

    async def send(self, data: bytes, *, eof: bool = False) -> None:
        """Send stream bytes to the server, in chunks, pacing on its credit."""
        view = memoryview(data)
        while True:
            piece, view = bytes(view[:CHUNK]), view[CHUNK:]
            while self._credit <= 0:
                self._credit_changed.clear()
                await self._credit_changed.wait()
            self._credit -= len(piece)
            await self._send(wire.encode("data", {"data": piece, "eof": eof and not view},
                                         id=self.id))
            if not view:
                return

    async def receive(self) -> bytes | None:
        """The next piece of input the server sent; None once it said eof."""
        data = await self._input.get()
        if data is not None:
            self._consumed += len(data)
            if self._consumed >= INPUT_WINDOW // 2:
                grant, self._consumed = self._consumed, 0
                self._input_allowed += grant
                await self._send(wire.encode("credit", {"bytes": grant}, id=self.id))
        return data

    # -- fed by the dispatcher --------------------------------------------------

    def _on_credit(self, amount: int) -> None:
        self._credit += amount
        self._credit_changed.set()

    def _on_data(self, data: bytes, eof: bool) -> None:
        if not self.op.takes_input:
            raise Refused("invalid", f"{self.op.name} takes no input")
        if not data and not eof:  # costs nothing against the window, so none are allowed
            raise Refused("invalid", "the server sent an empty data frame")
        self._input_allowed -= len(data)
        if self._input_allowed < 0:
            raise Refused("invalid", "the server sent more input than its window allows")
        self._input.put_nowait(data)
        if eof:
            self._input.put_nowait(None)


class Dispatcher:
    """The calls of one link session."""

    def __init__(self, config: AgentConfig, send: Send) -> None:
        self.config = config
        self._send = send
        self._calls: dict[int, tuple[Call, asyncio.Task[None]]] = {}

    def handle(self, frame: wire.Frame) -> None:
        """Act on an operation frame (request, data, credit, signal, cancel)."""
        if frame.id is None:
            log.warning("ignored a %s frame without a call id", frame.type)
            return
        if frame.type == "request":
            self._start(frame.id, frame.body)
            return
        entry = self._calls.get(frame.id)
        if entry is None:
            log.debug("ignored a %s frame for call %d, which is over", frame.type, frame.id)
            return
        call, task = entry
        body = frame.body
        try:
            if frame.type == "data":
                call._on_data(body["data"], body["eof"])
            elif frame.type == "credit":
                call._on_credit(body["bytes"])
            elif frame.type == "signal":
                if call.on_signal is not None:
                    call.on_signal(body["name"], body["args"])
                elif len(call._early_signals) < 16:  # kept until the handler sets on_signal
                    call._early_signals.append((body["name"], body["args"]))
            elif frame.type == "cancel":
                log.info("call %d (%s) cancelled by the server: %s", frame.id, call.op.name,
                         body.get("reason") or "no reason given")
                task.cancel()
        except Refused as exc:
            log.warning("call %d (%s): %s", frame.id, call.op.name, exc.reason)
            call.failure = exc
            task.cancel(exc.reason)

    def _start(self, call_id: int, body: dict[str, Any]) -> None:
        if call_id in self._calls:
            self._reply(call_id, error="invalid", reason=f"call {call_id} is already running")
            return
        if len(self._calls) >= MAX_CALLS:
            self._reply(call_id, error="busy",
                        reason=f"this agent is already running {MAX_CALLS} operations")
            return
        try:
            op = lookup(body["op"])
        except UnknownOperation as exc:
            self._reply(call_id, error="unknown_op",
                        reason=f"{exc}; the agent may be older than the server")
            return
        reason = self._policy(op)
        if reason is not None:
            log.warning("refused %s: %s", op.name, reason)
            self._reply(call_id, error="denied", reason=reason)
            return
        try:
            args = op.args.validate(body["args"], prefix="args.", strict=True)
        except SchemaError as exc:
            self._reply(call_id, error="invalid", reason=str(exc))
            return
        call = Call(call_id, op, args, body["window"], self.config, self._send)
        task = asyncio.create_task(self._run(call), name=f"call:{call_id}:{op.name}")
        self._calls[call_id] = (call, task)
        task.add_done_callback(functools.partial(self._ended, call))

    def _policy(self, op: Operation) -> str | None:
        """Why the agent's own policy refuses ``op`` now, or None."""
        from beeyard.agent.grants import effective

        if op.capability in effective(self.config):
            return None
        return (f"the {op.capability} capability is off on this host; enable it in the "
                f"agent's config or for a while with `beeyard-agent grant {op.capability} "
                f"--for 30m`")

    async def _run(self, call: Call) -> None:
        try:
            handler = _handler(call.op.name)
            result = await handler(call)
        except Refused as exc:
            self._reply(call.id, error=exc.code, reason=exc.reason)
        except asyncio.CancelledError as exc:
            if call.failure is not None:
                self._reply(call.id, error=call.failure.code, reason=call.failure.reason)
            else:
                reason = str(exc.args[0]) if exc.args else "cancelled"
                self._reply(call.id, error="cancelled", reason=reason)
            raise
        except Exception:
            log.exception("%s failed", call.op.name)
            self._reply(call.id, error="failed",
                        reason=f"{call.op.name} failed on the agent; its log has the details")
        else:
            self._reply(call.id, ok=True, result=result)
        finally:
            self._calls.pop(call.id, None)

    def _ended(self, call: Call, task: asyncio.Task[None]) -> None:
        """A task cancelled before its first step (a cancel, or input it does not take,
        in the same read as its request) never ran ``_run``: no reply was sent and its
        entry would hold one of the ``MAX_CALLS`` slots for the rest of the link."""
        entry = self._calls.get(call.id)
        if entry is None or entry[1] is not task:
            return  # ``_run`` ran and cleaned up (the id may already be a newer call's)
        del self._calls[call.id]
        failure = call.failure or Refused("cancelled", "cancelled before it started")
        self._reply(call.id, error=failure.code, reason=failure.reason)

    def _reply(self, call_id: int, *, ok: bool = False, result: dict[str, Any] | None = None,
               error: str | None = None, reason: str | None = None) -> None:
        body: dict[str, Any] = {"ok": ok}
        if ok:
            body["result"] = result or {}
        else:
            body["error"], body["reason"] = error, (reason or "")[:2048]
        try:
            data = wire.encode("reply", body, id=call_id)
        except wire.WireError as exc:  # a handler's result the schema refuses: our bug
            log.error("call %d: cannot send its result: %s", call_id, exc)
            data = wire.encode("reply", {"ok": False, "error": "failed",
                                         "reason": "the agent produced an invalid result"},
                               id=call_id)
        task = asyncio.ensure_future(self._send(data))
        task.add_done_callback(_ignore_send_failure)

    async def close(self) -> None:
        """The link is gone: cancel every call and give each ``CANCEL_GRACE`` seconds
        to clean up (kill its process group, remove its temporary file)."""
        tasks = [task for _, task in self._calls.values()]
        for task in tasks:
            task.cancel("the link to the server was lost")
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_GRACE)
        self._calls.clear()

    def __len__(self) -> int:
        return len(self._calls)


Handler = Callable[[Call], Awaitable[dict[str, Any]]]


def _handler(name: str) -> Handler:
    area = name.partition(".")[0]
    module = importlib.import_module(f"{__name__}.{area}")
    handlers: Mapping[str, Handler] = module.HANDLERS
    handler = handlers.get(name)
    if handler is None:
        raise Refused("unknown_op", f"this agent does not implement {name}")
    return handler


def _ignore_send_failure(task: asyncio.Future[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        exc = task.exception()
        if exc is not None:
            log.debug("could not send a reply: %s", exc)
