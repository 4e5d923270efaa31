"""Every real filesystem: mount, type, device, size, used, free, percent and inodes.

What counts as real (documented in docs/agent.md): a filesystem of a known
on-disk type (ext4, xfs, btrfs, zfs, ...), or any other type mounted from a
``/dev/`` block device, unless it is one of these, which are left out:

- pseudo and memory filesystems (proc, sysfs, tmpfs, devtmpfs, cgroup, ...):
  their "usage" is RAM or nothing and says nothing about disks;
- overlay (container root filesystems): its space is that of the filesystem
  underneath, which is reported already — counting it again double-counts;
- squashfs (snap packages, live images): read-only and always 100 % full;
- network filesystems (nfs, cifs, sshfs, ...): ``statvfs`` on a hung server
  blocks the caller for minutes, and this runs in the agent's only loop.

A device mounted at several places (bind mounts, btrfs subvolumes, a
container's /etc/hosts) is reported once, at its shortest mount path.

The mount table is re-read only when the kernel says it changed (a poll on
/proc/self/mounts reports POLLPRI after every mount or unmount), with a
re-read every five minutes as a safety net; ``statvfs`` runs every sample.
The poll itself is asked every ``_POLL_EVERY`` seconds, not every sample:
mounts change rarely, and a system call saved counts at one cold sample a
second (a new mount shows up within 5 s).
"""

from __future__ import annotations

import os
import re
import select
from typing import Any, ClassVar, NamedTuple

REAL_TYPES = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "bcachefs", "jfs", "reiserfs",
    "nilfs2", "vfat", "exfat", "ntfs", "ntfs3", "fuseblk", "hfsplus", "ufs",
})
PSEUDO_TYPES = frozenset({
    "proc", "sysfs", "tmpfs", "devtmpfs", "devpts", "ramfs", "rootfs", "cgroup", "cgroup2",
    "overlay", "aufs", "shiftfs", "squashfs", "nsfs", "autofs", "mqueue", "debugfs", "tracefs",
    "securityfs", "pstore", "bpf", "configfs", "fusectl", "hugetlbfs", "binfmt_misc",
    "efivarfs", "rpc_pipefs", "selinuxfs", "nfsd", "none",
})
NETWORK_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "9p", "afs", "davfs",
    "lustre", "gpfs", "ocfs2", "gfs2", "virtiofs",
})
_REFRESH = 300.0
_POLL_EVERY = 5.0
_ESCAPE = re.compile(r"\\([0-7]{3})")


class Mount(NamedTuple):
    device: str
    mount: str
    type: str


def unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[Mount]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out.append(Mount(unescape(parts[0]), unescape(parts[1]), parts[2]))
    return out


def is_real(mount: Mount) -> bool:
    kind = mount.type
    if kind in PSEUDO_TYPES or kind in NETWORK_TYPES:
        return False
    if kind.startswith("fuse.") or kind.startswith("nfs"):  # fuse.sshfs, fuse.lxcfs, ...
        return False
    return kind in REAL_TYPES or mount.device.startswith("/dev/")


def real_filesystems(mounts: list[Mount]) -> list[Mount]:
    """The real ones, one per device, at the device's shortest mount path."""
    best: dict[str, Mount] = {}
    for m in mounts:
        if not is_real(m):
            continue
        seen = best.get(m.device)
        if seen is None or (len(m.mount), m.mount) < (len(seen.mount), seen.mount):
            best[m.device] = m
    return sorted(best.values(), key=lambda m: m.mount)


def usage(m: Mount) -> dict[str, Any] | None:
    try:
        st = os.statvfs(m.mount)
    except OSError:
        return None  # unmounted meanwhile, or not ours to look at
    size = st.f_blocks * st.f_frsize
    if size <= 0:
        return None
    free = st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    row: dict[str, Any] = {
        "mount": m.mount[:4096], "type": m.type[:64], "device": m.device[:4096],
        "size": float(size), "used": float(used), "free": float(free),
        # like df: used against what non-root users could have, so 100 % means full
        "percent": min(100.0, 100.0 * used / (used + free)) if used + free else 0.0,
    }
    if st.f_files > 0:  # btrfs and vfat have no fixed inode table
        row["inodes"] = int(st.f_files)
        row["inodes_used"] = int(max(0, st.f_files - st.f_ffree))
    return row


class MountWatch:
    """The real filesystems of the mount table, re-read only when it changed (see the
    module's docstring). Shared by FilesystemCollector and the C sampler's set-up."""

    def __init__(self, path: str = "/proc/self/mounts") -> None:
        self._path = path
        self.mounts: list[Mount] = []
        self._read_at = float("-inf")
        self._polled_at = float("-inf")
        self._poll: select.poll | None = None
        self._fd: int | None = None
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLPRI | select.POLLERR)
        except OSError:
            self._fd = self._poll = None

    def _changed(self, now: float) -> bool:
        if now - self._read_at >= _REFRESH:
            return True
        if self._poll is None or now - self._polled_at < _POLL_EVERY:
            return False
        self._polled_at = now
        return bool(self._poll.poll(0))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self._poll = None

    def refresh(self, now: float) -> bool:
        """Re-read the table if it may have changed; True when ``mounts`` was re-read."""
        if not self._changed(now):
            return False
        if self._poll is not None:
            self._poll.poll(0)  # consume the change event before reading
        with open(self._path, encoding="utf-8", errors="replace") as f:
            self.mounts = real_filesystems(parse_mounts(f.read()))[:1024]
        self._read_at = now
        return True


class FilesystemCollector:
    name = "filesystems"
    fallback: ClassVar[dict[str, Any]] = {"filesystems": []}

    def __init__(self, path: str = "/proc/self/mounts") -> None:
        self._watch = MountWatch(path)

    def collect(self, metrics: dict[str, Any], now: float) -> None:
        self._watch.refresh(now)
        rows = []
        for m in self._watch.mounts:
            row = usage(m)
            if row is not None:
                rows.append(row)
        metrics["filesystems"] = rows
