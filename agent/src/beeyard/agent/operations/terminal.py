"""``terminal.open``: a shell on a real PTY for the length of one call.

The PTY's output is read from the event loop (``add_reader`` on the non-blocking
master) into a buffer that one task sends on, credit-paced; when the server
stops granting credit (a slow browser) and the buffer is full, reading stops, the
kernel's PTY buffer fills, and the shell's writes block: nothing grows here.
Keys from the server are written to the master as they come.

The session ends when the shell exits, when nothing was typed or printed for
``terminal.idle_timeout`` seconds, when the server says eof, or when the call is
cancelled (the browser closed its socket, the link to the server went, the agent
is stopping). However it ends, every process of the shell's session is hung up
and then killed (``shells.hang_up_now``/``kill_remaining``), well within the
dispatcher's two seconds of grace, so no shell outlives its terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from beeyard.agent import shells
from beeyard.agent.operations import Call, Refused
from beeyard.shared.frames import CHUNK
from beeyard.shared.operations.terminal import RESIZE
from beeyard.shared.schema import SchemaError

log = logging.getLogger("beeyard.agent.terminal")

READ_SIZE = 65536  # bytes per read of the PTY master
HIGH_WATER = CHUNK  # output buffered beyond this: stop reading until it is sent
DRAIN = 1.0  # seconds to pass on the last output after the session's processes die

_OPEN: set[Session] = set()  # sessions of this agent process, for terminal.max_sessions


class Session:
    """One shell, its PTY, and the tasks that move bytes between it and the call."""

    def __init__(self, call: Call, acct: shells.Account) -> None:
        self.call = call
        self.acct = acct
        self.loop = asyncio.get_running_loop()
        self.started = time.monotonic()
        self.active = self.started  # last input or output
        self.bytes_in = 0  # keys written to the shell
        self.bytes_out = 0  # output read from the shell
        self.proc: subprocess.Popen[bytes] | None = None
        self.master = -1
        self._out = bytearray()
        self._out_ready = asyncio.Event()
        self._out_eof = False
        self._reading = False

    # -- the PTY's output --------------------------------------------------------

    def _on_readable(self) -> None:
        """Take everything the PTY holds now (a read returns one tty buffer, a few
        KiB, so a single read per wake-up would cut fast output into tiny frames)."""
        got = 0
        while len(self._out) < HIGH_WATER:
            try:
                data = os.read(self.master, READ_SIZE)
            except BlockingIOError:
                break
            except OSError:  # EIO: every slave side is closed
                data = b""
            if not data:
                self._out_eof = True
                self._stop_reading()
                break
            self._out += data
            got += len(data)
        else:
            self._stop_reading()  # until the sender catches up
        if got:
            self.bytes_out += got
            self.active = time.monotonic()
        self._out_ready.set()

    def _start_reading(self) -> None:
        if not self._reading and not self._out_eof:
            self.loop.add_reader(self.master, self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self.loop.remove_reader(self.master)
            self._reading = False

    async def _output(self) -> None:
        """Send what the shell prints, as it comes; returns at the PTY's end."""
        self._start_reading()
        while True:
            if not self._out:
                if self._out_eof:
                    return
                self._out_ready.clear()
                await self._out_ready.wait()
                continue
            data = bytes(self._out)
            self._out.clear()
            self._start_reading()
            await self.call.send(data)

    # -- keys --------------------------------------------------------------------

    async def _input(self) -> None:
        """Write the keys the server sends; returns when it says eof."""
        while True:
            data = await self.call.receive()
            if data is None:
                return
            self.bytes_in += len(data)
            self.active = time.monotonic()
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self.master, view):]
                except BlockingIOError:  # the shell is not reading: wait until it does
                    await self._writable()
                except OSError:  # the terminal is gone; the session ends elsewhere
                    return

    async def _writable(self) -> None:
        ready = self.loop.create_future()
        self.loop.add_writer(self.master, ready.set_result, None)
        try:
            await ready
        finally:
            self.loop.remove_writer(self.master)

    def on_signal(self, name: str, args: Mapping[str, Any]) -> None:
        """``resize``: the browser's terminal changed size. Anything else, or a size
        out of bounds, is logged and ignored: no signal can hurt the session."""
        if name != "resize":
            log.warning("terminal: ignored unknown signal %r", name[:32])
            return
        try:
            size = RESIZE.validate(args, prefix="args.", strict=True)
            shells.set_size(self.master, size["cols"], size["rows"])
        except (SchemaError, OSError) as exc:
            log.warning("terminal: ignored a resize: %s", exc)

    # -- ends ----------------------------------------------------------------------

    async def _exited(self) -> None:
        """Returns when the shell process has exited (pidfd readable, else polled)."""
        assert self.proc is not None
        try:
            pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):  # Linux before 5.3: a thread waits instead
            await asyncio.to_thread(self.proc.wait)
            return
        try:
            ready: asyncio.Future[None] = self.loop.create_future()

            def exited() -> None:
                if not ready.done():
                    ready.set_result(None)

            self.loop.add_reader(pidfd, exited)
            try:
                await ready
            finally:
                self.loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)

    async def _idle(self) -> None:
        """Returns once nothing was typed or printed for ``idle_timeout`` seconds."""
        limit = self.call.config.terminal.idle_timeout
        while True:
            left = self.active + limit - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(left)

    async def run(self) -> dict[str, Any]:
        cols, rows = self.call.args["cols"], self.call.args["rows"]
        try:
            self.proc, self.master = shells.spawn(self.acct, self.call.args["term"], cols, rows)
        except shells.ShellError as exc:
            raise Refused("unavailable", str(exc)) from None
        log.info("terminal: %s started as %s (pid %d)", self.acct.shell, self.acct.name,
                 self.proc.pid)
        self.call.on_signal = self.on_signal
        output = asyncio.create_task(self._output(), name="terminal-output")
        ends = {
            asyncio.create_task(self._exited(), name="terminal-exit"): "exit",
            asyncio.create_task(self._input(), name="terminal-input"): "input_closed",
            asyncio.create_task(self._idle(), name="terminal-idle"): "idle",
        }
        ended = "exit"
        try:
            done, _ = await asyncio.wait([*ends, output], return_when=asyncio.FIRST_COMPLETED)
            if output in done:
                output.result()  # raise what failed
                ended = "exit"  # the PTY closed: the shell and all it started are done
            else:
                ended = ends[done.pop()]
            if ended == "idle":
                limit = self.call.config.terminal.idle_timeout
                notice = f"\r\n[beeyard: closed after {limit} s without input or output]\r\n"
                with contextlib.suppress(TimeoutError):  # a browser not reading gets none
                    await asyncio.wait_for(self.call.send(notice.encode()), DRAIN)
            await self._end()  # the session's processes go; the PTY's last output follows
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(output), DRAIN)
        finally:
            for task in (*ends, output):
                task.cancel()
            await self._cleanup()
        code = self.proc.returncode
        return {
            "ended": ended,
            "exit_status": code if code is not None and code >= 0 else None,
            "signal": -code if code is not None and code < 0 else None,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration": round(time.monotonic() - self.started, 3),
        }

    async def _end(self) -> None:
        """Hang up the session's processes and kill what outlives the grace."""
        proc = self.proc
        if proc is None:
            return
        pids = shells.hang_up_now(proc)
        deadline = time.monotonic() + shells.HANGUP_GRACE
        while time.monotonic() < deadline:
            proc.poll()
            if not shells.session_members(proc.pid):
                break
            await asyncio.sleep(0.02)
        killed = shells.kill_remaining(proc)
        if killed:
            log.info("terminal: killed %d process(es) that ignored SIGHUP", len(killed))
        proc.poll()
        if proc.returncode is None:
            await asyncio.to_thread(shells.reap, proc, 1.0)
        log.info("terminal: session of pid %d ended (%d process(es) hung up)", proc.pid,
                 len(pids))

    async def _cleanup(self) -> None:
        """Whatever happened, end the processes and close the PTY; survives another
        cancellation (the dispatcher's grace), since a shell must never outlive it."""
        self._stop_reading()
        task = asyncio.ensure_future(self._end())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait({task}, timeout=2.0)
            raise
        finally:
            if self.master >= 0:
                os.close(self.master)
                self.master = -1


async def open_terminal(call: Call) -> dict[str, Any]:
    """A shell on a PTY until it exits, idles out or the call is cancelled."""
    policy = call.config.terminal
    if len(_OPEN) >= policy.max_sessions:
        raise Refused("busy", f"this host already has {len(_OPEN)} terminal session(s) open, "
                              f"its limit (terminal.max_sessions in the agent's config)")
    try:
        acct = shells.account(policy.user, policy.shell)
    except shells.ShellError as exc:
        raise Refused("unavailable", str(exc)) from None
    session = Session(call, acct)
    _OPEN.add(session)
    try:
        return await session.run()
    finally:
        _OPEN.discard(session)


HANDLERS = {"terminal.open": open_terminal}
