"""Crash-safe file replacement: temp file, fsync, rename, fsync of the directory.

Used for the run token, the config, the grants file and the spool's merged
entries (a new spool entry takes a cheaper way, see ``spool``). After a crash at
any instant a reader sees either the old complete file or the new complete
one, never a torn or empty file — which matters most for the token: a torn
token would lock the agent out of its server for good.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may take only part)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``. The temp file is created with ``mode`` from the
    start (O_EXCL, no umask window) so a secret is never readable by others."""
    directory = path.parent
    tmp = directory / f".{path.name}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover of a crashed writer with our pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed it; never widen beyond mode
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(directory)
