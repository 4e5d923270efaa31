"""The files operations on the agent, on top of ``beeyard.agent.files.confine``.

Every path taken from a request is resolved by ``confine`` (roots, deny patterns,
no ``..``, no symlink leaving a root, never the agent's own files); a refusal
there becomes ``denied`` with its rule as the reason, a missing path
``not_found``, a size over ``[files] max_read_bytes``/``max_write_bytes``
``too_large``. Names are acted on through a verified fd of their directory
(``dir_fd``), never by a path the kernel would walk again.

All file IO runs in worker threads, off the event loop: one slow disk must not
stall the link's heartbeats or another call. A file's fd is used by one thread at
a time (``_Guarded``): a cancelled call waits for its thread's read or write to
end before it closes the fd, so the fd number is never reused under a thread.

Writes are atomic: ``write`` and ``upload`` fill a temporary file beside the
target (``.beeyard-upload.<random>.tmp``, mode 0600), fsync it, and rename it
into place only when it is complete (an upload: its size and SHA-256 match);
on any failure or cancellation the temporary file is removed and the target is
untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import posixpath
import re
import secrets
import shutil
import stat
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from beeyard.agent.files import confine
from beeyard.agent.files.confine import Denied, NotFound, Policy
from beeyard.agent.operations import Call, Refused

log = logging.getLogger("beeyard.agent.files")

READ_PIECE = 1024 * 1024  # bytes read per worker-thread hop while streaming a file
TEMP_PREFIX = ".beeyard-upload."
_SHA256 = re.compile(r"[0-9a-f]{64}")

T = TypeVar("T")


# --- refusals ------------------------------------------------------------------


class TooLarge(Refused):
    def __init__(self, reason: str) -> None:
        super().__init__("too_large", reason)


def _size_cap(policy: Policy, size: int, *, for_write: bool) -> None:
    try:
        confine.check_size(policy, size, for_write=for_write)
    except Denied as exc:
        raise TooLarge(exc.reason) from None


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking file work in a thread; confinement refusals become replies."""
    return await _off_loop_future(asyncio.to_thread(fn, *args))


async def _acquire(fn: Callable[..., T], *args: Any, release: Callable[[T], None]) -> T:
    """``_off_loop`` for work that yields a resource (an open fd, a staged temporary
    file): if the call is cancelled while the thread runs, the thread still finishes,
    and what it made is released when it does instead of being lost."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))

    def abandoned(done: asyncio.Future[T]) -> None:
        if not done.cancelled() and done.exception() is None:
            release(done.result())

    try:
        return await _off_loop_future(asyncio.shield(future))
    except asyncio.CancelledError:
        future.add_done_callback(abandoned)
        raise


async def _off_loop_future(future: Awaitable[T]) -> T:
    try:
        return await future
    except NotFound as exc:
        raise Refused("not_found", exc.reason) from None
    except Denied as exc:
        raise Refused("denied", exc.reason) from None


def _os_refusal(exc: OSError, what: str) -> Refused:
    """An OS error on a confined path, in words (never a traceback)."""
    code = {errno.ENOENT: "not_found", errno.EEXIST: "exists", errno.ENOTEMPTY: "exists",
            errno.ENOSPC: "failed", errno.EDQUOT: "failed", errno.EXDEV: "invalid",
            errno.EISDIR: "invalid", errno.ENOTDIR: "invalid", errno.EINVAL: "invalid",
            errno.EACCES: "denied", errno.EPERM: "denied", errno.EROFS: "denied"}
    reason = exc.strerror or "error"
    if exc.errno == errno.EXDEV:
        reason = "source and destination are on different filesystems"
    return Refused(code.get(exc.errno or 0, "failed"), f"{what}: {reason}")


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def _describe(st: os.stat_result) -> dict[str, Any]:
    return {"type": _kind(st.st_mode), "size": st.st_size, "mtime": st.st_mtime,
            "mode": stat.S_IMODE(st.st_mode)}


# --- list, stat, read ----------------------------------------------------------


def _list(policy: Policy, path: str, limit: int) -> dict[str, Any]:
    real = confine.resolve(policy, path, must_exist=True, for_write=False)
    if not real.is_dir():
        raise Refused("invalid", "not a directory")
    fd = confine.open_dir(real)
    try:
        names = sorted(os.listdir(fd))
        entries: list[dict[str, Any]] = []
        hidden = 0
        for name in names:
            if not confine.visible(policy, os.path.join(real, name)):
                hidden += 1  # a denied name is not shown, only counted
                continue
            if len(entries) >= limit:
                break
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:  # removed while we listed
                continue
            entries.append({"name": name, **_describe(st)})
    finally:
        os.close(fd)
    truncated = len(entries) + hidden < len(names)
    return {"path": str(real), "entries": entries, "hidden": hidden, "truncated": truncated}


def _stat(policy: Policy, path: str) -> dict[str, Any]:
    real = confine.resolve(policy, path, must_exist=True, for_write=False)
    st = os.stat(real, follow_symlinks=False)
    return {"path": str(real), **_describe(st), "uid": st.st_uid, "gid": st.st_gid}


def _read(policy: Policy, path: str, max_bytes: int) -> dict[str, Any]:
    fd = confine.open_confined(policy, path)
    try:
        st = os.fstat(fd)
        _size_cap(policy, st.st_size, for_write=False)
        if st.st_size > max_bytes:
            raise TooLarge(f"the file is {st.st_size} bytes, more than the {max_bytes} bytes "
                           f"read returns; download it instead")
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            data = os.read(fd, max_bytes + 1 - size)
            if not data:
                break
            chunks.append(data)
            size += len(data)
        if size > max_bytes:
            raise TooLarge(f"the file grew beyond {max_bytes} bytes while it was read")
    finally:
        os.close(fd)
    return {"path": path, "size": size, "mtime": st.st_mtime, "mode": stat.S_IMODE(st.st_mode),
            "content": b"".join(chunks)}


# --- staged writes (write, upload) ---------------------------------------------


class _Guarded:
    """An fd used by one thread at a time; ``close`` waits for a read or write under
    way in a worker thread (a cancelled call's) before it releases the fd."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None


class Staged:
    """A temporary file beside ``target``, renamed into place by ``commit``."""

    def __init__(self, target: Path, overwrite: bool, mode: int | None) -> None:
        self.target = target
        self.overwrite = overwrite
        self.mode = mode
        self.dir_fd = confine.open_dir(target.parent)
        self.temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}.tmp"
        self.size = 0
        self.digest = hashlib.sha256()
        self.committed = False
        try:
            self._check_target()
            fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=self.dir_fd)
        except BaseException:
            os.close(self.dir_fd)
            raise
        self.file = _Guarded(fd)

    def _existing(self) -> os.stat_result | None:
        try:
            return os.stat(self.target.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _check_target(self) -> os.stat_result | None:
        st = self._existing()
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                raise Refused("invalid", f"{self.target} exists and is not a regular file")
            if not self.overwrite:
                raise Refused("exists", f"{self.target} exists (overwrite is off)")
        return st

    def write(self, data: bytes) -> None:
        with self.file.lock:
            if self.file.fd is None:
                raise Refused("cancelled", "the upload was abandoned")
            view = memoryview(data)
            while view:
                try:
                    done = os.write(self.file.fd, view)
                except OSError as exc:
                    raise _os_refusal(exc, "writing the temporary file") from None
                view = view[done:]
            self.digest.update(data)
            self.size += len(data)

    def commit(self) -> None:
        """Give the file the existing target's mode and owner (or the requested mode
        for a new one), fsync it, and rename it over the target (or link it in
        without replacing, when overwrite is off)."""
        st = self._check_target()
        with self.file.lock:
            fd = self.file.fd
            if fd is None:
                raise Refused("cancelled", "the upload was abandoned")
            if st is not None:
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
                # not root: the file stays ours, as with any write by this user
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, st.st_uid, st.st_gid)
            else:
                os.fchmod(fd, 0o644 if self.mode is None else self.mode)
            os.fsync(fd)
        self.file.close()
        try:
            if self.overwrite:
                os.rename(self.temp, self.target.name, src_dir_fd=self.dir_fd,
                          dst_dir_fd=self.dir_fd)
            else:
                os.link(self.temp, self.target.name, src_dir_fd=self.dir_fd,
                        dst_dir_fd=self.dir_fd, follow_symlinks=False)
                os.unlink(self.temp, dir_fd=self.dir_fd)
        except FileExistsError:
            raise Refused("exists", f"{self.target} exists (overwrite is off)") from None
        except OSError as exc:
            raise _os_refusal(exc, "renaming into place") from None
        self.committed = True
        os.fsync(self.dir_fd)

    def discard(self) -> None:
        """Remove the temporary file (unless committed) and release the fds."""
        self.file.close()
        if not self.committed:
            try:
                os.unlink(self.temp, dir_fd=self.dir_fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("could not remove the temporary file %s/%s: %s",
                          self.target.parent, self.temp, exc)
        os.close(self.dir_fd)


def _stage(policy: Policy, path: str, size: int, overwrite: bool,
           mode: int | None) -> Staged:
    _size_cap(policy, size, for_write=True)
    target = confine.resolve(policy, path, must_exist=False, for_write=True)
    return Staged(target, overwrite, mode)


def _write(policy: Policy, args: Mapping[str, Any]) -> dict[str, Any]:
    content: bytes = args["content"]
    staged = _stage(policy, args["path"], len(content), args["overwrite"], args["mode"])
    try:
        staged.write(content)
        staged.commit()
    finally:
        staged.discard()
    return {"path": str(staged.target), "size": staged.size,
            "sha256": staged.digest.hexdigest()}


# --- delete, mkdir, move -------------------------------------------------------


def _check_tree(policy: Policy, real: Path, moved_to: Path | None = None) -> None:
    """A directory is deleted or moved only if nothing in it is denied (where it is,
    and where it would go): a deny pattern must not be got round by taking the
    directory that holds a secret."""
    for dirpath, dirnames, filenames in os.walk(real, followlinks=False):
        for name in (*dirnames, *filenames):
            inner = os.path.join(dirpath, name)
            places = [inner]
            if moved_to is not None:
                places.append(os.path.join(moved_to, os.path.relpath(inner, real)))
            for place in places:
                if not confine.visible(policy, place):
                    raise Denied(f"{os.path.relpath(inner, real)} inside it is protected "
                                 f"(files.deny or the agent's own files)")


def _delete(policy: Policy, path: str, recursive: bool) -> dict[str, Any]:
    real = confine.resolve_entry(policy, path)
    dir_fd = confine.open_dir(real.parent)
    try:
        st = os.stat(real.name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if recursive:
                _check_tree(policy, real)
                shutil.rmtree(real.name, dir_fd=dir_fd)
            else:
                os.rmdir(real.name, dir_fd=dir_fd)
        else:
            os.unlink(real.name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            raise Refused("invalid", "the directory is not empty (set recursive to delete "
                                     "it with its contents)") from None
        raise _os_refusal(exc, "delete") from None
    finally:
        os.close(dir_fd)
    return {"path": str(real), "type": _kind(st.st_mode)}


def _mkdir(policy: Policy, path: str, parents: bool, exist_ok: bool = False) -> Path:
    try:
        real = confine.resolve(policy, path, must_exist=False, for_write=True)
    except NotFound:
        parent = posixpath.dirname(path.rstrip("/"))
        if not parents or not parent or parent == path:
            raise
        _mkdir(policy, parent, True, exist_ok=True)
        real = confine.resolve(policy, path, must_exist=False, for_write=True)
    dir_fd = confine.open_dir(real.parent)
    try:
        os.mkdir(real.name, 0o755, dir_fd=dir_fd)
    except FileExistsError:
        if not (exist_ok and real.is_dir()):
            raise Refused("exists", f"{real} already exists") from None
    except OSError as exc:
        raise _os_refusal(exc, "mkdir") from None
    finally:
        os.close(dir_fd)
    return real


def _move(policy: Policy, source: str, destination: str, overwrite: bool) -> dict[str, Any]:
    src = confine.resolve_entry(policy, source)
    dst = confine.resolve_entry(policy, destination, must_exist=False)
    src_st = os.lstat(src)
    try:
        dst_st: os.stat_result | None = os.lstat(dst)
    except FileNotFoundError:
        dst_st = None
    if dst_st is not None:
        if not overwrite:
            raise Refused("exists", f"{dst} exists (overwrite is off)")
        if stat.S_ISDIR(dst_st.st_mode):
            raise Refused("invalid", f"{dst} is a directory; name the new path in full")
    if stat.S_ISDIR(src_st.st_mode):
        if dst == src or str(dst).startswith(f"{src}/"):
            raise Refused("invalid", "a directory cannot be moved into itself")
        _check_tree(policy, src, moved_to=dst)
    src_fd = confine.open_dir(src.parent)
    try:
        dst_fd = confine.open_dir(dst.parent)
        try:
            if overwrite:
                os.rename(src.name, dst.name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            elif stat.S_ISDIR(src_st.st_mode):
                # rename would replace an empty directory that appeared meanwhile; the
                # window is tiny and the race needs write access inside the root
                if _exists_at(dst.name, dst_fd):
                    raise Refused("exists", f"{dst} exists (overwrite is off)")
                os.rename(src.name, dst.name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            else:  # link then unlink: never replaces what appeared meanwhile
                os.link(src.name, dst.name, src_dir_fd=src_fd, dst_dir_fd=dst_fd,
                        follow_symlinks=False)
                os.unlink(src.name, dir_fd=src_fd)
        except FileExistsError:
            raise Refused("exists", f"{dst} exists (overwrite is off)") from None
        except OSError as exc:
            raise _os_refusal(exc, "move") from None
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    return {"source": str(src), "destination": str(dst), "type": _kind(src_st.st_mode)}


def _exists_at(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


# --- handlers ------------------------------------------------------------------


async def list_dir(call: Call) -> dict[str, Any]:
    policy = confine.policy_for(call.config)
    return await _off_loop(_list, policy, call.args["path"], call.args["limit"])


async def stat_path(call: Call) -> dict[str, Any]:
    return await _off_loop(_stat, confine.policy_for(call.config), call.args["path"])


async def read(call: Call) -> dict[str, Any]:
    policy = confine.policy_for(call.config)
    return await _off_loop(_read, policy, call.args["path"], call.args["max_bytes"])


async def write(call: Call) -> dict[str, Any]:
    return await _off_loop(_write, confine.policy_for(call.config), call.args)


async def delete(call: Call) -> dict[str, Any]:
    policy = confine.policy_for(call.config)
    return await _off_loop(_delete, policy, call.args["path"], call.args["recursive"])


async def mkdir(call: Call) -> dict[str, Any]:
    policy = confine.policy_for(call.config)
    real = await _off_loop(_mkdir, policy, call.args["path"], call.args["parents"])
    return {"path": str(real)}


async def move(call: Call) -> dict[str, Any]:
    a = call.args
    return await _off_loop(_move, confine.policy_for(call.config), a["source"],
                           a["destination"], a["overwrite"])


def _open_download(policy: Policy, path: str, expected: int | None) -> tuple[_Guarded, int]:
    fd = confine.open_confined(policy, path)
    try:
        size = os.fstat(fd).st_size
        _size_cap(policy, size, for_write=False)
        if expected is not None and size != expected:
            raise Refused("failed", f"the file changed size since the transfer was created "
                                    f"({expected} → {size} bytes); start it again")
    except BaseException:
        os.close(fd)
        raise
    return _Guarded(fd), size


def _read_piece(file: _Guarded, n: int, digest: Any) -> bytes:
    with file.lock:
        if file.fd is None:
            return b""
        data = os.read(file.fd, n)
    digest.update(data)
    return data


async def download(call: Call) -> dict[str, Any]:
    """Stream a file's bytes (exactly the size it had when opened), then its SHA-256."""
    policy = confine.policy_for(call.config)
    file, size = await _acquire(_open_download, policy, call.args["path"], call.args["size"],
                                release=lambda opened: opened[0].close())
    digest = hashlib.sha256()
    sent = 0

    def read_next(offset: int) -> asyncio.Future[bytes]:
        return asyncio.ensure_future(asyncio.to_thread(
            _read_piece, file, min(READ_PIECE, size - offset), digest))

    # the next piece is read (and hashed) while this one is sent: disk and link overlap
    reading = read_next(0) if size else None
    try:
        while reading is not None:
            data = await reading
            reading = None
            if not data:
                raise Refused("failed", f"the file shrank while it was read ({sent} of "
                                        f"{size} bytes)")
            sent += len(data)
            if sent < size:
                reading = read_next(sent)
            await call.send(data, eof=sent >= size)
        if size == 0:
            await call.send(b"", eof=True)
    finally:
        await asyncio.to_thread(file.close)  # after a read under way: it holds the lock
    return {"path": call.args["path"], "size": size, "sha256": digest.hexdigest()}


async def upload(call: Call) -> dict[str, Any]:
    """Receive exactly ``size`` bytes into a staged file; rename it into place only
    if their SHA-256 is the one given in the args or, lacking that, in a ``digest``
    signal from the server before the end of the data."""
    args = call.args
    size: int = args["size"]
    expected: list[str | None] = [args["sha256"]]

    def on_signal(name: str, sargs: Mapping[str, Any]) -> None:
        value = sargs.get("sha256")
        if name == "digest" and expected[0] is None and isinstance(value, str) \
                and _SHA256.fullmatch(value):
            expected[0] = value
        else:
            log.warning("upload %d: ignored a %s signal", call.id, name[:32])

    call.on_signal = on_signal
    policy = confine.policy_for(call.config)
    staged = await _acquire(_stage, policy, args["path"], size, args["overwrite"],
                            args["mode"], release=Staged.discard)
    try:
        while True:
            data = await call.receive()
            if data is None:
                break
            if staged.size + len(data) > size:
                raise Refused("invalid", f"more than the {size} bytes announced arrived")
            await asyncio.to_thread(staged.write, data)
        if staged.size != size:
            raise Refused("invalid", f"{staged.size} bytes arrived, {size} were announced")
        got = staged.digest.hexdigest()
        if expected[0] is None:
            raise Refused("invalid", "no SHA-256 was given for the upload")
        if got != expected[0]:
            raise Refused("invalid", f"the SHA-256 of the bytes received ({got}) is not "
                                     f"the one expected ({expected[0]}); nothing was written")
        await _off_loop(staged.commit)
    finally:
        # runs even when cancelled: the thread finishes the removal whatever happens here
        await asyncio.to_thread(staged.discard)
    return {"path": str(staged.target), "size": staged.size, "sha256": got}


HANDLERS: Mapping[str, Callable[[Call], Awaitable[dict[str, Any]]]] = {
    "files.list": list_dir,
    "files.stat": stat_path,
    "files.read": read,
    "files.write": write,
    "files.delete": delete,
    "files.mkdir": mkdir,
    "files.move": move,
    "files.download": download,
    "files.upload": upload,
}
