"""Cheap reads of /proc and /sys files.

``os.open``/``os.read`` skip the buffered file object that ``open()`` builds,
which halves the cost of reading a small /proc file (measured: 13 µs against
22 µs for /proc/meminfo) — it adds up when a dozen files are read every second
within a 0.5 ms budget.
"""

from __future__ import annotations

import os
from pathlib import Path

_CHUNK = 65536
_WHOLE = 2048  # a shorter read is the whole file (see ProcFile)


def read_bytes(path: str | Path) -> bytes | None:
    """The whole file, or None when it cannot be read (absent, permission, gone).

    Reads until end of file: a /proc file backed by a record iterator
    (/proc/net/dev, /proc/diskstats, /proc/net/tcp) returns about one page
    per read however large the buffer, so a short read is not the end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_text(path: str | Path) -> str | None:
    data = read_bytes(path)
    return None if data is None else data.decode("utf-8", "replace")


class ProcFile:
    """A /proc file kept open and re-read from offset 0 with one ``pread``.

    Saves the path lookup, open and close of every sample: the seven files the
    collectors read each second cost 129 µs this way against 216 µs with
    open/read/close (measured at one read a second). The kernel regenerates a
    /proc file's content on every read from offset 0 (sysfs attributes too).

    An iterator-backed file returns about a page per read (see ``read_bytes``),
    so a read that fills most of a page is followed by more; but a read shorter
    than ``_WHOLE`` bytes is the whole file, because the kernel stops a read
    early only when its next record would not fit in its page-sized buffer, and
    no record of the files read here comes near 2 KiB. That saves the second,
    empty ``pread`` on every file every second.
    """

    def __init__(self, path: str | Path, size: int = _CHUNK) -> None:
        self.path = str(path)
        self._size = size
        self._whole = min(size, _WHOLE)
        self._fd: int | None = None

    def read(self) -> bytes | None:
        """The whole current content, or None when the file cannot be read."""
        fd = self._fd
        if fd is None:
            try:
                fd = self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        try:
            data = os.pread(fd, self._size, 0)
            if len(data) < self._whole:
                return data
            chunks = [data]
            offset = len(data)
            while chunk := os.pread(fd, self._size, offset):
                chunks.append(chunk)
                offset += len(chunk)
        except OSError:
            self.close()
            return None
        return data if len(chunks) == 1 else b"".join(chunks)

    def fileno(self) -> int:
        """The descriptor, opened if need be; -1 when the file cannot be opened.
        For the C sampler, which preads it; the file stays this object's to close."""
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return -1
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
