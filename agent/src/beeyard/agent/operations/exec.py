"""``exec.run``: one command in a process group of its own, its output streamed.

The command runs in a new session (``start_new_session``), so it and everything
it starts share one process group that the agent can kill as a whole: on
timeout, on cancel (the user's, or the link's loss) and when the command's main
process exits while children it left behind still run. Killing is SIGTERM to
the group, then SIGKILL after ``KILL_GRACE`` seconds.

Policy is the agent's own ``[exec]`` table, checked here whatever the request
says: a shell line only with ``allow_shell``; the timeout and the output cap are
the lower of the request's and the config's; at most ``max_concurrent`` commands
at once (``busy`` beyond); the command runs as ``exec.user`` when set, with its
groups, uid and gid switched by the child before it runs anything (the agent
must be root for that, and refuses otherwise rather than run as itself).

Output (stdout and stderr merged, in the order written) goes to the server as it
comes, up to the cap; beyond, nothing more is sent but the pipe is still drained
so the command never blocks on a full pipe, and the result says ``truncated``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from beeyard.agent.operations import Call, Handler, Refused

KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL to the command's group
EXIT_POLL = 0.02  # seconds between looks at whether the main process has exited
DRAIN_AFTER_EXIT = 2.0  # seconds to read what is left in the pipe once the group is gone
READ_SIZE = 64 * 1024
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_RESERVED_ENV = {"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT"}  # loader hijacks, refused

_running = 0  # commands in progress in this agent process


@dataclass
class _Output:
    """What the command wrote: how much, how much was sent, and whether it was cut."""

    cap: int
    total: int = 0
    sent: int = 0
    truncated: bool = False
    pending: list[bytes] = field(default_factory=list)
    reading: bool = False  # the pump waits on the pipe, not on the server's credit


def _argv(call: Call) -> list[str]:
    args = call.args
    argv, shell = args.get("argv"), args.get("shell")
    if (argv is None) == (shell is None):
        raise Refused("invalid", "args: give exactly one of argv (a list) or shell (a line)")
    if shell is not None:
        if not call.config.exec.allow_shell:
            raise Refused("denied", "shell lines are off on this host: the agent's config "
                                    "must set exec.allow_shell = true (argv commands are "
                                    "allowed)")
        return ["/bin/sh", "-c", shell]
    assert argv is not None
    if not argv[0]:
        raise Refused("invalid", "args.argv[0]: the program must not be empty")
    return list(argv)


def _account() -> tuple[pwd.struct_passwd | None, str]:
    try:
        entry = pwd.getpwuid(os.geteuid())
    except KeyError:
        return None, str(os.geteuid())
    return entry, entry.pw_name


def _identity(call: Call) -> tuple[dict[str, Any], pwd.struct_passwd | None]:
    """The subprocess keyword arguments that switch users, and whose account it is."""
    wanted = call.config.exec.user
    me, my_name = _account()
    if not wanted or wanted == my_name:
        return {}, me
    try:
        entry = pwd.getpwnam(wanted)
    except KeyError:
        raise Refused("denied", f"exec.user {wanted!r} does not exist on this host") from None
    if os.geteuid() != 0:
        raise Refused("denied", f"exec.user is {wanted!r} but the agent runs as {my_name!r}, "
                                f"not root, and cannot switch users; it will not run the "
                                f"command as itself instead")
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": groups}, entry


def _environment(call: Call, account: pwd.struct_passwd | None) -> dict[str, str]:
    """A small, clean environment: the account's basics plus the request's own, never
    the agent's (which may hold what the command has no business seeing)."""
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}
    if account is not None:
        env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name,
                   SHELL=account.pw_shell or "/bin/sh")
    for name, value in (call.args.get("env") or {}).items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise Refused("invalid", f"args.env: {str(name)[:64]!r} is not a variable name")
        if name in _RESERVED_ENV:
            raise Refused("denied", f"args.env: {name} may not be set for a command")
        if not isinstance(value, str) or len(value) > 4096 or "\x00" in value:
            raise Refused("invalid", f"args.env.{name}: must be a string of at most 4096 "
                                     f"characters without NUL")
        env[name] = value
    return env


def _cwd(call: Call, account: pwd.struct_passwd | None) -> str:
    cwd = call.args.get("cwd")
    if cwd is None:
        home = account.pw_dir if account is not None else "/"
        return home if os.path.isdir(home) else "/"
    if not os.path.isabs(cwd):
        raise Refused("invalid", "args.cwd: must be an absolute path")
    if not os.path.isdir(cwd):
        raise Refused("not_found", f"args.cwd: {cwd} is not a directory on this host")
    return str(cwd)


def _kill_group(pgid: int, sig: int) -> bool:
    """Signal the whole group; False if nothing in it is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a member changed its uid (setuid program)
        return True
    return True


async def _exited(proc: asyncio.subprocess.Process) -> int:
    """The main process's return code once it has exited. Not ``proc.wait()``, which
    also waits for the pipe to close: a child left behind holding it would keep that
    waiting after the command itself is over."""
    # returncode is set by the child watcher, which offers no event to await
    while proc.returncode is None:  # noqa: ASYNC110
        await asyncio.sleep(EXIT_POLL)
    return proc.returncode


async def _end_group(proc: asyncio.subprocess.Process, pgid: int) -> None:
    """SIGTERM the group, wait up to ``KILL_GRACE``, then SIGKILL what is left."""
    if not _kill_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + KILL_GRACE
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if not _group_alive(pgid):
            return
    _kill_group(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True


async def _pump(call: Call, stream: asyncio.StreamReader, out: _Output) -> None:
    """Send what the command writes as it comes, up to the cap; then keep reading."""
    while True:
        out.reading = True
        chunk = await stream.read(READ_SIZE)
        out.reading = False
        if not chunk:
            return
        out.total += len(chunk)
        room = out.cap - out.sent
        if room <= 0:
            out.truncated = True
            continue
        piece = chunk[:room]
        if len(piece) < len(chunk):
            out.truncated = True
        out.sent += len(piece)
        await call.send(piece)


async def run(call: Call) -> dict[str, Any]:
    """Run the command; its output streams, the reply says how it ended."""
    global _running
    policy = call.config.exec
    argv = _argv(call)
    identity, account = _identity(call)
    env = _environment(call, account)
    cwd = _cwd(call, account)
    requested = call.args.get("timeout")
    timeout = min(requested or policy.max_timeout, policy.max_timeout)
    cap = min(call.args.get("max_output") or policy.max_output_bytes, policy.max_output_bytes)
    if _running >= policy.max_concurrent:
        raise Refused("busy", f"this host already runs {policy.max_concurrent} commands "
                              f"(exec.max_concurrent); try again when one has finished")
    _running += 1
    proc: asyncio.subprocess.Process | None = None
    pump: asyncio.Task[None] | None = None
    try:
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True,
                close_fds=True, **identity)
        except FileNotFoundError:
            raise Refused("not_found", f"{argv[0]}: no such program on this host") from None
        except PermissionError as exc:
            raise Refused("failed", f"{argv[0]}: cannot run it: {exc.strerror}") from None
        except OSError as exc:
            raise Refused("failed", f"{argv[0]}: cannot run it: {exc.strerror or exc}") from None
        assert proc.stdout is not None
        pgid = proc.pid  # a new session: its leader's pid is the group's id
        out = _Output(cap)
        pump = asyncio.create_task(_pump(call, proc.stdout, out))
        timed_out = False
        try:
            await asyncio.wait_for(_exited(proc), timeout)
        except TimeoutError:
            timed_out = True
        # The main process is gone (or out of time): whatever it left running goes too,
        # and the pipe then closes once every writer is dead.
        await _end_group(proc, pgid)
        await asyncio.wait_for(_exited(proc), KILL_GRACE + 5)
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(pump), DRAIN_AFTER_EXIT)
                break
            except TimeoutError:
                if not out.reading:
                    continue  # still sending what the command wrote, paced by the link
                pump.cancel()  # a writer that escaped the group (setsid) holds the pipe
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
                break
        await call.send(b"", eof=True)
        code = proc.returncode
        return {
            "exit_code": code if code is not None and code >= 0 else None,
            "signal": -code if code is not None and code < 0 else None,
            "duration": round(time.monotonic() - started, 3),
            "bytes": out.total,
            "sent": out.sent,
            "truncated": out.truncated,
            "timed_out": timed_out,
        }
    finally:
        if pump is not None and not pump.done():
            pump.cancel()
        if proc is not None and (proc.returncode is None or _group_alive(proc.pid)):
            # Cancelled (by the server, or the link went): the group goes, now. In a task
            # of its own, so that a second cancel (the link lost during a cancel) cannot
            # stop it between the SIGTERM and the SIGKILL; it holds its slot till done.
            killing = asyncio.ensure_future(_kill(proc))
            _killing.add(killing)
            killing.add_done_callback(_killed)
            await asyncio.shield(killing)
        else:
            _running -= 1


_killing: set[asyncio.Future[None]] = set()


async def _kill(proc: asyncio.subprocess.Process) -> None:
    await _end_group(proc, proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_exited(proc), KILL_GRACE)


def _killed(task: asyncio.Future[None]) -> None:
    global _running
    _running -= 1
    _killing.discard(task)


HANDLERS: dict[str, Handler] = {"exec.run": run}
