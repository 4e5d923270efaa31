"""Confine every path the files capability touches to the configured roots.

The agent runs as root, so a path taken off the wire must never reach beyond
what the operator listed in ``[files] roots``. ``resolve`` turns a requested
path into the real path it designates, or raises ``Denied``:

- ``..`` is refused outright (even ``a/../b``): no request needs it, and a
  rule without exceptions is one an operator can reason about;
- an absolute path must lie under a root, named by its configured path or its
  real path; a relative one is relative to the first root;
- symbolic links are followed one hop at a time by the agent itself, never by
  the kernel, and each hop must stay inside the root, including the final
  component and dangling links; every ``lstat`` is therefore inside the root,
  so what lies outside is never probed and never reported;
- the deny patterns are matched against every component and every leading
  part of the path below its root, both as requested and as resolved (a link
  named ``notes`` that points at ``server.key`` is denied);
- the agent's own config directory, token file (and its temp siblings), spool
  and CA file are always denied, whatever the roots and patterns say.

**Time of check, time of use.** A path checked here can be changed before it
is used (a directory swapped for a symlink). Python has no ``openat2`` with
``RESOLVE_BENEATH``, so ``open_confined`` narrows the window instead: it opens
the parent directory, checks through ``/proc/self/fd`` that the directory
opened is the one resolved, opens the final name *relative to that directory
fd* with ``O_NOFOLLOW``, and checks the file's fd the same way. A swap is then
detected and refused; the one residue is that with ``O_CREAT`` a file may be
created in a directory that was swapped in after its check — but only in the
directory whose fd was verified, so never outside the root. Operations by
path (rename, unlink, mkdir) should use ``dir_fd`` from a verified directory in
the same way; an attacker able to race them already has write access inside
the root.

**Hard links** cannot be told from the original by path: a hard link inside a
root to ``/etc/shadow`` reads as ``/etc/shadow``'s content. This is accepted:
creating one needs write access inside the root (and, with the kernel's
``protected_hardlinks``, ownership of the target) already. Deny patterns apply
to the names, not to the inode.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from beeyard.agent.config import (
    DEFAULT_MAX_READ_BYTES,
    DEFAULT_MAX_WRITE_BYTES,
    AgentConfig,
    FilesConfig,
)

PATH_MAX = 4096  # bytes, as Linux's PATH_MAX (with its NUL)
NAME_MAX = 255  # bytes per component
MAX_LINKS = 40  # symlink hops per resolution, as the kernel's ELOOP limit

_OUTSIDE = "the path is outside every configured root"
_LINK_OUTSIDE = "a symbolic link in the path leads outside its root"
_PROTECTED = "the agent's own files are never reachable"
_CHANGED = "the path changed while it was being opened"


class Denied(Exception):
    """A request the policy refuses. The message names the rule that refused it and
    is safe to show to the user: it never says anything about what lies outside
    the roots (not even whether it exists)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotFound(Denied):
    """The path is inside a root but does not exist (or a component is not a
    directory). A subclass of ``Denied`` so that one ``except`` covers every refusal."""


@dataclass(frozen=True)
class Root:
    """A root as configured and as it really is. The real path is taken once, when
    the policy is built: a root that is a symlink is pinned to its target then, so
    whoever can rewrite that symlink (outside the root) cannot move the root."""

    configured: str
    real: str

    @property
    def configured_parts(self) -> tuple[str, ...]:
        return _split_absolute(self.configured)

    @property
    def real_parts(self) -> tuple[str, ...]:
        return _split_absolute(self.real)


@dataclass(frozen=True)
class Policy:
    """Everything ``resolve`` needs, with every path already in real form."""

    roots: tuple[Root, ...]
    deny: tuple[str, ...]
    protected_trees: tuple[str, ...] = ()
    protected_files: tuple[str, ...] = ()
    max_read_bytes: int = DEFAULT_MAX_READ_BYTES
    max_write_bytes: int = DEFAULT_MAX_WRITE_BYTES

    def denied_by(self, parts: Sequence[str]) -> str | None:
        """The first deny pattern matching a component or a leading part of the
        path below its root (so a denied directory hides all it contains), or None.
        ``fnmatchcase``: Linux names are case-sensitive, so is the policy."""
        for i, name in enumerate(parts):
            leading = "/".join(parts[: i + 1])
            for pattern in self.deny:
                if fnmatchcase(name, pattern) or fnmatchcase(leading, pattern):
                    return pattern
        return None

    def is_protected(self, real: str) -> bool:
        """Is this real path one of the agent's own files, or inside one of its dirs?"""
        if any(_within(real, tree) for tree in self.protected_trees):
            return True
        for file in self.protected_files:
            if real == file:
                return True
            head, name = os.path.split(file)
            # write_atomic's temp file: ".agent.token.<pid>.tmp" beside the token
            if os.path.dirname(real) == head and os.path.basename(real).startswith(
                f".{name}."
            ):
                return True
        return False

    def holds_protected(self, real: str) -> bool:
        """Does this real path contain one of the agent's own files? Moving or
        deleting such a directory would take the agent's files with it."""
        return any(_within(p, real) for p in (*self.protected_trees, *self.protected_files))


def build_policy(
    files: FilesConfig,
    protected_trees: Iterable[Path] = (),
    protected_files: Iterable[Path] = (),
) -> Policy:
    """A policy from ``[files]``; roots that are not existing directories are left
    out (nothing can be reached through them until the agent restarts)."""
    roots: list[Root] = []
    for root in files.roots:
        real = os.path.realpath(root)
        if os.path.isdir(real):
            roots.append(Root(os.path.normpath(root), real))
    return Policy(
        roots=tuple(roots),
        deny=files.deny,
        protected_trees=tuple(os.path.realpath(p) for p in protected_trees),
        protected_files=tuple(os.path.realpath(p) for p in protected_files),
        max_read_bytes=files.max_read_bytes,
        max_write_bytes=files.max_write_bytes,
    )


def policy_for(config: AgentConfig) -> Policy:
    """The policy of a loaded config: its ``[files]`` plus the agent's own files —
    the config's directory and the spool as a whole, the token and CA files."""
    trees = [config.spool.dir]
    if config.path is not None:
        trees.append(config.path.parent)
    files = [config.token_file]
    if config.ca_file is not None:
        files.append(config.ca_file)
    return build_policy(config.files, trees, files)


def resolve(policy: Policy, requested: object, *, must_exist: bool, for_write: bool) -> Path:
    """The real path ``requested`` designates, checked against every rule above.

    ``must_exist=False`` lets the final component be missing (a file or
    directory about to be created); its parent must exist. ``for_write`` also
    refuses a root itself and any directory holding the agent's own files.
    """
    return Path(_resolve(policy, requested, must_exist=must_exist, for_write=for_write)[1])


def check_size(policy: Policy, size: int, *, for_write: bool) -> None:
    """Refuse a transfer beyond the configured cap, naming the cap."""
    limit = policy.max_write_bytes if for_write else policy.max_read_bytes
    if size > limit:
        key = "max_write_bytes" if for_write else "max_read_bytes"
        raise Denied(f"the file is larger than the limit of {limit} bytes (files.{key})")


def open_confined(
    policy: Policy, requested: object, flags: int = os.O_RDONLY, mode: int = 0o600
) -> int:
    """Open a regular file inside a root and return its fd (the caller closes it).

    Write flags make it a ``for_write`` resolution; ``O_CREAT`` allows a missing
    file. The final name is opened relative to a verified fd of its directory,
    with ``O_NOFOLLOW`` and ``O_NONBLOCK`` (so a FIFO swapped in cannot hang the
    agent), and the result is verified again; see the module docstring.
    """
    writing = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
    root, real = _resolve(policy, requested, must_exist=not flags & os.O_CREAT,
                          for_write=writing)
    if real == root.real:
        raise Denied("not a regular file")
    parent, name = os.path.split(real)
    dir_fd = _open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        _verify_fd(dir_fd, parent)
        fd = _open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, mode, dir_fd)
    finally:
        os.close(dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Denied("not a regular file")
        _verify_fd(fd, real)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


# --- the steps ---------------------------------------------------------------


def _resolve(
    policy: Policy, requested: object, *, must_exist: bool, for_write: bool
) -> tuple[Root, str]:
    text, parts = _parse(requested)
    root, rest = _pick_root(policy, text, parts)
    _check_deny(policy, rest)
    real = _walk(policy, root, rest, must_exist=must_exist)
    _check_deny(policy, _below(root.real, real))
    if policy.is_protected(real):
        raise Denied(_PROTECTED)
    if for_write and real == root.real:
        raise Denied("a root itself cannot be written, moved or deleted")
    if for_write and policy.holds_protected(real):
        raise Denied(_PROTECTED)
    return root, real


def _parse(requested: object) -> tuple[str, list[str]]:
    """The components of a well-formed request: a str, no NUL, encodable as a
    file name, within PATH_MAX and NAME_MAX, without ``..``; ``.`` and empty
    components (``a//b``, a trailing slash) are dropped."""
    if not isinstance(requested, str):
        raise Denied("the path must be a string")
    if not requested:
        raise Denied("the path is empty")
    if "\0" in requested:
        raise Denied("the path contains a NUL byte")
    try:
        encoded = os.fsencode(requested)
    except UnicodeEncodeError:
        raise Denied("the path is not a valid file name") from None
    if len(encoded) >= PATH_MAX:
        raise Denied(f"the path is longer than {PATH_MAX - 1} bytes")
    parts = [p for p in requested.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Denied("'..' is not allowed in a path")
    if any(len(os.fsencode(p)) > NAME_MAX for p in parts):
        raise Denied(f"a path component is longer than {NAME_MAX} bytes")
    return requested, parts


def _pick_root(policy: Policy, requested: str, parts: list[str]) -> tuple[Root, list[str]]:
    """The root an absolute path lies under (the deepest one, for nested roots) and
    the components below it; a relative path belongs to the first root."""
    if not policy.roots:
        raise Denied("no file roots are configured on this host: list the directories to "
                     "reach under [files] roots in the agent's config, then restart it")
    if not requested.startswith("/"):
        return policy.roots[0], parts
    best: tuple[Root, int] | None = None
    for root in policy.roots:
        for base in (root.configured_parts, root.real_parts):
            if tuple(parts[: len(base)]) == base and (best is None or len(base) > best[1]):
                best = (root, len(base))
    if best is None:
        raise Denied(_OUTSIDE)
    return best[0], parts[best[1]:]


def _check_deny(policy: Policy, parts: Sequence[str]) -> None:
    pattern = policy.denied_by(parts)
    if pattern is not None:
        raise Denied(f"denied by the pattern {pattern!r} (files.deny)")


def _walk(policy: Policy, root: Root, parts: list[str], *, must_exist: bool) -> str:
    """Follow ``parts`` from the real root one component at a time, following
    symlinks by hand so that every hop is checked before it is taken."""
    current = root.real
    pending = list(reversed(parts))  # a stack: symlink targets are pushed onto it
    links = 0
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":  # only from a symlink's target; requests cannot hold it
            if current == root.real:
                raise Denied(_LINK_OUTSIDE)
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, name)
        mode = _lstat_mode(candidate, last=not any(p not in ("", ".") for p in pending),
                           must_exist=must_exist)
        if mode is None:
            return candidate  # the missing final component of a path to create
        if stat.S_ISLNK(mode):
            links += 1
            if links > MAX_LINKS:
                raise Denied("too many levels of symbolic links")
            current = _follow(root, current, os.readlink(candidate), pending)
            continue
        current = candidate
        if policy.is_protected(current):
            raise Denied(_PROTECTED)
    return current


def _lstat_mode(path: str, *, last: bool, must_exist: bool) -> int | None:
    """The file type bits, None for a missing final component that may be created;
    OS errors become refusals with the OS's own short reason."""
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        if last and not must_exist:
            return None
        raise NotFound("no such file or directory") from None
    except NotADirectoryError:
        raise NotFound("a component of the path is not a directory") from None
    except OSError as exc:
        raise Denied(f"the path cannot be accessed: {exc.strerror or 'error'}") from None


def _follow(root: Root, current: str, target: str, pending: list[str]) -> str:
    """Push a link's target onto the stack; return the directory it starts from.
    An absolute target must name the root by its real or configured path (it is
    compared, never walked from ``/``); a relative one starts at the link's dir."""
    if not target:
        raise NotFound("no such file or directory")
    if target.startswith("/"):
        tparts = [p for p in target.split("/") if p not in ("", ".")]
        for base in (root.real_parts, root.configured_parts):
            if tuple(tparts[: len(base)]) == base:
                pending.extend(reversed(tparts[len(base):]))
                return root.real
        raise Denied(_LINK_OUTSIDE)
    pending.extend(reversed(target.split("/")))
    return current


def _below(root_real: str, real: str) -> list[str]:
    """The components of ``real`` below ``root_real`` (which contains it)."""
    rest = real[len(root_real):] if root_real != "/" else real
    return [p for p in rest.split("/") if p]


def _within(path: str, base: str) -> bool:
    return base == "/" or path == base or path.startswith(base + "/")


def _split_absolute(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split("/") if p not in ("", "."))


def _open(path: str, flags: int, mode: int = 0o600, dir_fd: int | None = None) -> int:
    """``os.open`` with ``O_CLOEXEC``; a symlink met through ``O_NOFOLLOW`` (ELOOP)
    means the path was swapped after it was checked."""
    try:
        return os.open(path, flags | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except FileNotFoundError:
        raise NotFound("no such file or directory") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Denied(_CHANGED) from None
        raise Denied(f"the file cannot be opened: {exc.strerror or 'error'}") from None


def _verify_fd(fd: int, expected: str) -> None:
    """The fd must be the very path resolved. ``/proc/self/fd`` names what was
    really opened; without ``/proc`` the device and inode are compared instead."""
    try:
        actual = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(expected))
        except OSError:
            same = False
        if not same:
            raise Denied(_CHANGED) from None
        return
    if actual != expected:
        raise Denied(_CHANGED)


# --- for operations that act on a name itself (delete, move, mkdir) -----------


def resolve_entry(policy: Policy, requested: object, *, must_exist: bool = True) -> Path:
    """The real path of the entry ``requested`` names *itself*: its directory is
    resolved like ``resolve`` (links followed, each hop checked) but a final
    symbolic link is not followed, so delete and move act on the link, not on
    what it points at (which may be outside the root: the link itself is not).
    Checked as for writing: never a root, never the agent's own files, never a
    denied name; ``must_exist=False`` lets it be missing (a move's destination)."""
    text, parts = _parse(requested)
    root, rest = _pick_root(policy, text, parts)
    if not rest:
        raise Denied("a root itself cannot be written, moved or deleted")
    _check_deny(policy, rest)
    parent = _walk(policy, root, rest[:-1], must_exist=True)
    real = os.path.join(parent, rest[-1])
    _lstat_mode(real, last=True, must_exist=must_exist)
    _check_deny(policy, _below(root.real, real))
    if policy.is_protected(real) or policy.holds_protected(real):
        raise Denied(_PROTECTED)
    if any(real == r.real for r in policy.roots):
        raise Denied("a root itself cannot be written, moved or deleted")
    return Path(real)


def visible(policy: Policy, real: str) -> bool:
    """Whether an entry met inside a root (listing a directory, walking a tree to
    delete or move it) passes the deny patterns and is not one of the agent's own
    files. ``real`` need not exist: a move checks where a tree's entries would go."""
    if policy.is_protected(real):
        return False
    roots = [r for r in policy.roots if _within(real, r.real)]
    if not roots:
        return False
    root = max(roots, key=lambda r: len(r.real))
    return policy.denied_by(_below(root.real, real)) is None


def open_dir(real: str | Path) -> int:
    """Open a directory already resolved (a real path inside a root) and verify that
    the fd is that very directory; operations by name then use it as ``dir_fd``, so
    a directory swapped for a link after the check is refused, not followed."""
    path = str(real)
    fd = _open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        _verify_fd(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd
