"""The on-disk spool of minute summaries not yet acknowledged by the server.

One file per minute (``<minute>.summary``, the encoded summary frame) in one
directory. A new minute's file is written whole as an unnamed file
(``O_TMPFILE``), linked under its name, then fsync'd; on Linux's journalling
filesystems that one fsync also makes the new name durable (a temp file and a
rename need a second, of the directory: ~0.17 ms of CPU a minute more). An entry
merged into an existing one, or a filesystem where that does not work, takes the
temp file and the rename (``atomic.write_atomic``). A file disappears in one
unlink when the server acknowledges it.

So an entry reported as put is on disk, whole, and nothing acknowledged is kept.
After a SIGKILL at any instant every entry is whole or absent. After a power cut
in the middle of a put, that one entry (never reported as put, never sent) may be
on disk empty or torn; it is dropped with a warning when read. Leftover temp
files of an interrupted write are removed when the spool is opened.

Why a directory rather than an append-only file: acknowledgements arrive in
any order and removal is then one unlink, with no compaction and no log
replay; a day at the default bound is 1,440 small files.

The bound (default 1,440 = 24 h) drops the oldest entries, with a warning,
when it is exceeded. Only the sorted list of minutes is held in memory.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

from beeyard.agent.atomic import write_all, write_atomic
from beeyard.agent.summary import merge
from beeyard.shared import wire

log = logging.getLogger("beeyard.agent.spool")

_SUFFIX = ".summary"
_RECENT = 8  # entries whose frames stay in memory (see Spool._recent)
# naming an unnamed file cannot work here: no /proc, a security module, another filesystem
_NO_LINKAT = frozenset({errno.ENOENT, errno.EPERM, errno.EACCES, errno.EXDEV, errno.EOPNOTSUPP})


class SpoolBusy(OSError):
    """Another process holds the spool: two agents must not share one."""


class Spool:
    def __init__(self, directory: Path, max_entries: int = 1440, exclusive: bool = False) -> None:
        """Open (creating) the spool. ``exclusive``: hold a lock on it for the life of
        this process, as the daemon does, so that a second agent started with the
        same config fails at once instead of replaying and deleting the same files."""
        self.directory = directory
        self.max_entries = max_entries
        self.versions: dict[int, int] = {}
        """minute → a counter bumped on every put: a sender resends a merged entry."""
        self._next_version = 0
        # the encoded frames of the latest entries put by this process (on disk too,
        # fsync'd): the link sends each once a minute right after the put, and reading
        # the file back and checking the frame again cost more than the put itself
        self._recent: dict[int, bytes] = {}
        self._lock_fd: int | None = None
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if exclusive:
            self._lock()
        self._dir_fd: int | None = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        minutes = []
        for entry in os.scandir(directory):
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                with contextlib.suppress(OSError):  # an interrupted write's temp file
                    os.unlink(entry.path)
                continue
            stem, _, suffix = entry.name.partition(".")
            if "." + suffix == _SUFFIX and stem.isdigit():
                minutes.append(int(stem))
        for minute in sorted(minutes):
            self._bump(minute)
        self._enforce_bound()

    def _lock(self) -> None:
        import fcntl

        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolBusy(f"another beeyard-agent is using the spool {self.directory}") \
                from None
        self._lock_fd = fd

    def _bump(self, minute: int) -> None:
        self._next_version += 1
        self.versions[minute] = self._next_version

    def _path(self, minute: int) -> Path:
        return self.directory / f"{minute:012d}{_SUFFIX}"

    def __len__(self) -> int:
        return len(self.versions)

    def pending(self) -> list[int]:
        """Unacknowledged minutes, oldest first."""
        return sorted(self.versions)

    def put(self, body: dict[str, object]) -> None:
        """Store a summary durably (merged with an unacknowledged one of the same minute)."""
        minute = int(body["minute"])  # type: ignore[call-overload]
        if minute in self.versions:
            older = self.get_body(minute)
            if older is not None:
                body = merge(older, dict(body))
        data = wire.encode("summary", dict(body))
        if minute in self.versions or not self._create(minute, data):
            write_atomic(self._path(minute), data, mode=0o600)
        if len(self._recent) >= _RECENT:
            self._recent.clear()
        self._recent[minute] = data
        self._bump(minute)
        self._enforce_bound()

    def _create(self, minute: int, data: bytes) -> bool:
        """Write a new entry as an unnamed file, name it, fsync it; False where this
        filesystem (or a missing /proc) does not allow it, or a file has that name."""
        if self._dir_fd is None:
            return False
        try:
            fd = os.open(".", os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o600,
                         dir_fd=self._dir_fd)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                self._close_dir()  # not on this filesystem: write_atomic from now on
            return False
        name = self._path(minute).name
        try:
            write_all(fd, data)
            # linkat through /proc: naming an open unnamed file, without CAP_DAC_READ_SEARCH
            try:
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=self._dir_fd)
            except FileExistsError:  # not ours: replaced atomically
                return False
            except OSError as exc:
                if exc.errno in _NO_LINKAT:  # no /proc, or a sandbox says no: for good
                    self._close_dir()
                return False
            try:
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=self._dir_fd)
                raise
        finally:
            os.close(fd)
        return True

    def close(self) -> None:
        """Release the lock and the directory (the daemon's spool lives as long as it)."""
        self._close_dir()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _close_dir(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def get(self, minute: int) -> bytes | None:
        """The entry's encoded frame; a corrupt or vanished entry is dropped with a warning."""
        data = self._recent.get(minute)
        if data is not None and minute in self.versions:
            return data
        path = self._path(minute)
        try:
            data = path.read_bytes()
            wire.decode(data)
        except FileNotFoundError:
            self.versions.pop(minute, None)
            return None
        except (OSError, wire.WireError) as exc:
            log.warning("dropping unreadable spool entry %s: %s", path, exc)
            self._unlink([minute])
            return None
        return data

    def get_body(self, minute: int) -> dict[str, object] | None:
        data = self.get(minute)
        return None if data is None else wire.decode(data).body

    def remove(self, minutes: list[int]) -> int:
        """Drop acknowledged entries; returns how many were in the spool."""
        present = [m for m in minutes if m in self.versions]
        self._unlink(present)
        return len(present)

    def _unlink(self, minutes: list[int]) -> None:
        """No fsync of the directory after: a removal lost in a crash brings back an
        entry the server already has, which it ignores as a duplicate when replayed,
        while the fsync is a journal commit paid for with every ack, once a minute."""
        for minute in minutes:
            self.versions.pop(minute, None)
            self._recent.pop(minute, None)
            with contextlib.suppress(FileNotFoundError):
                self._path(minute).unlink()

    def _enforce_bound(self) -> None:
        excess = len(self.versions) - self.max_entries
        if excess > 0:
            oldest = self.pending()[:excess]
            log.warning(
                "spool full (%d entries): dropping the %d oldest unacknowledged minute "
                "summaries (%d to %d)", self.max_entries, excess, oldest[0], oldest[-1],
            )
            self._unlink(oldest)
