"""Starting a shell on a fresh PTY as a given user, and ending everything it started.

The shell leads a session of its own (``setsid``) with the PTY as its controlling
terminal, as a login would give it, so Ctrl-C reaches the foreground job, job
control works, and the session id names every process the shell ever started,
whatever process group job control put them in. Ending a terminal therefore means
ending the *session*: every process whose session id is the shell's gets SIGHUP
(and SIGCONT, so a stopped job sees it), then SIGKILL after a short grace. A
process that left the session with ``setsid`` of its own (``nohup setsid …``,
a daemon) has asked to outlive the terminal and is not followed.

Privileges are dropped by ``subprocess`` in the child before ``exec``: the
supplementary groups of the user (``os.getgrouplist``, as ``initgroups`` would
set), then the gid, then the uid. The shell gets a clean environment (HOME,
USER, LOGNAME, SHELL, TERM, PATH, LANG), never the agent's own, which may hold
its paths and settings.
"""

from __future__ import annotations

import fcntl
import functools
import grp
import os
import pwd
import signal
import struct
import subprocess
import termios
import time
from dataclasses import dataclass

HANGUP_GRACE = 0.5  # seconds between SIGHUP and SIGKILL
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"
_NO_LOGIN = ("nologin", "false")


class ShellError(Exception):
    """The shell cannot be started here; the message says what to change."""


@dataclass(frozen=True)
class Account:
    """Who the shell runs as and with what."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str
    groups: tuple[int, ...]
    switch: bool  # whether the child must change user (the agent runs as someone else)


def account(user: str, shell: str) -> Account:
    """The account a terminal runs as: ``user`` (empty: the agent's own) and ``shell``
    (empty: that user's login shell). Raises ``ShellError`` for what cannot work."""
    euid = os.geteuid()
    if user:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise ShellError(f"terminal.user {user!r} does not exist on this host") from None
        if euid != 0 and pw.pw_uid != euid:
            me = _name_of(euid)
            raise ShellError(f"the agent runs as {me}, not root, so it cannot start shells as "
                             f"{user!r}; leave terminal.user empty or run the agent as root")
    else:
        pw = pwd.getpwuid(euid)
    program = shell or pw.pw_shell or "/bin/sh"
    if os.path.basename(program) in _NO_LOGIN:
        raise ShellError(f"{pw.pw_name}'s login shell is {program}; set terminal.shell in the "
                         f"agent's config to the shell to run")
    if not os.path.isabs(program) or not os.access(program, os.X_OK):
        raise ShellError(f"terminal shell {program!r} is not an executable absolute path")
    switch = pw.pw_uid != euid
    groups = tuple(os.getgrouplist(pw.pw_name, pw.pw_gid)) if switch else ()
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, program, groups, switch)


def _name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def environment(acct: Account, term: str) -> dict[str, str]:
    """The shell's environment: what a login sets, nothing of the agent's."""
    return {
        "HOME": acct.home if os.path.isdir(acct.home) else "/",
        "USER": acct.name,
        "LOGNAME": acct.name,
        "SHELL": acct.shell,
        "TERM": term,
        "PATH": ROOT_PATH if acct.uid == 0 else USER_PATH,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }


def set_size(fd: int, cols: int, rows: int) -> None:
    """Set the PTY's window size; on a change the kernel sends SIGWINCH to the
    terminal's foreground process group, which redraws."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def get_size(fd: int) -> tuple[int, int]:
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return cols, rows


def spawn(acct: Account, term: str, cols: int, rows: int) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``acct``'s shell as a login shell on a new PTY of ``cols`` x ``rows``.

    Returns the process and the PTY's master side (non-blocking, close-on-exec);
    raises ``ShellError`` if it cannot start. The child's only step in Python
    before ``exec`` is the TIOCSCTTY ioctl (a C call, no allocation), so forking
    from the agent's threaded process is as safe as ``subprocess`` itself.
    """
    try:
        master, slave = os.openpty()
    except OSError as exc:  # /dev/ptmx missing, or kernel.pty.max reached
        raise ShellError(f"no PTY available on this host: {exc}") from None
    try:
        os.set_blocking(master, False)
        set_size(slave, cols, rows)
        if acct.switch:  # the user owns their terminal, as after a login
            os.fchown(slave, acct.uid, _tty_gid())
            os.fchmod(slave, 0o620)
        env = environment(acct, term)
        extra: dict[str, object] = {}
        if acct.switch:
            extra = {"user": acct.uid, "group": acct.gid, "extra_groups": list(acct.groups)}
        proc = subprocess.Popen(
            ["-" + os.path.basename(acct.shell)],  # a leading dash: a login shell
            executable=acct.shell, stdin=slave, stdout=slave, stderr=slave,
            cwd=env["HOME"], env=env, close_fds=True, start_new_session=True,
            preexec_fn=_controlling_tty,
            **extra,  # type: ignore[call-overload]
        )
    except (OSError, subprocess.SubprocessError) as exc:
        os.close(master)
        raise ShellError(f"cannot start {acct.shell} as {acct.name}: {exc}") from None
    finally:
        os.close(slave)
    return proc, master


# After setsid, make stdin (the PTY's slave) the session's controlling terminal.
_controlling_tty = functools.partial(fcntl.ioctl, 0, termios.TIOCSCTTY, 0)


@functools.cache
def _tty_gid() -> int:
    try:
        return grp.getgrnam("tty").gr_gid
    except KeyError:
        return -1  # no tty group: keep the group


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes whose session id is ``sid``, from /proc."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rfind(b")") + 2:].split()
        # fields: state ppid pgrp session ...
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry.name))
    return members


def signal_all(pids: list[int], signals: tuple[int, ...]) -> None:
    for pid in pids:
        for sig in signals:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                break


def hang_up_now(proc: subprocess.Popen[bytes]) -> list[int]:
    """Send SIGHUP and SIGCONT to every process of the shell's session; the pids."""
    pids = session_members(proc.pid)
    if proc.poll() is None and proc.pid not in pids:
        pids.append(proc.pid)
    signal_all(pids, (signal.SIGHUP, signal.SIGCONT))
    return pids


def kill_remaining(proc: subprocess.Popen[bytes]) -> list[int]:
    """SIGKILL whatever of the session is still alive; the pids killed."""
    pids = session_members(proc.pid)
    if proc.poll() is None and proc.pid not in pids:
        pids.append(proc.pid)
    signal_all(pids, (signal.SIGKILL,))
    return pids


def reap(proc: subprocess.Popen[bytes], within: float) -> int | None:
    """The shell's return code once it is reaped, waiting at most ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        code = proc.poll()
        if code is not None or time.monotonic() >= deadline:
            return code
        time.sleep(0.01)
