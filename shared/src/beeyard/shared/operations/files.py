"""The files operations: list, stat, read, write, delete, mkdir, move, download, upload.

All need the ``files`` capability, and on the agent every path goes through
``beeyard.agent.files.confine`` (roots, deny patterns, no ``..``, no symlink
leaving a root). ``read`` and ``write`` carry a file whole in one frame and are
meant for an editor (``EDIT_MAX`` bytes at most); ``download`` and ``upload``
stream any size up to the agent's caps as ``data`` frames, with a SHA-256 over
the whole transfer, and an upload lands under its name only once it is complete
and verified.
"""

from __future__ import annotations

from beeyard.shared.operations import Operation, declare
from beeyard.shared.schema import Field, Schema

PATH_MAX = 4096
EDIT_MAX = 2 * 1024 * 1024
"""Largest file ``files.read`` returns and ``files.write`` takes: one frame
(``wire.MAX_FRAME`` is 4 MiB) with room to spare; larger files are transferred."""
LIST_MAX = 10_000
"""Most entries one ``files.list`` returns (the reply stays far under a frame)."""
SIZE_MAX = 1024**4  # 1 TiB, as the agent's own caps
SHA256 = r"[0-9a-f]{64}"


def _path(name: str = "path", doc: str = "a path inside one of the agent's roots") -> Field:
    return Field(name, "str", min=1, max=PATH_MAX, doc=doc)


_MODE = Field("mode", "int", required=False, nullable=True, min=0, max=0o7777,
              doc="permission bits of a new file (an existing file keeps its own)")

LIST = declare(Operation("files.list", "files", Schema("files.list", (
    _path(doc="a directory inside one of the agent's roots"),
    Field("limit", "int", required=False, min=1, max=LIST_MAX, default=LIST_MAX),
)), doc="The entries of a directory (name, type, size, mtime, mode), sorted by name."))

STAT = declare(Operation("files.stat", "files", Schema("files.stat", (_path(),)),
                         doc="What a path is: type, size, mtime, mode, owner."))

READ = declare(Operation("files.read", "files", Schema("files.read", (
    _path(),
    Field("max_bytes", "int", required=False, min=1, max=EDIT_MAX, default=EDIT_MAX,
          doc="refuse (too_large) a file larger than this"),
)), doc="A regular file's whole content, for an editor."))

WRITE = declare(Operation("files.write", "files", Schema("files.write", (
    _path(),
    Field("content", "bin", max=EDIT_MAX),
    Field("overwrite", "bool", required=False, default=True,
          doc="replace an existing file (else: exists)"),
    _MODE,
)), doc="Replace or create a regular file with ``content``, atomically (temp file, "
        "fsync, rename)."))

DELETE = declare(Operation("files.delete", "files", Schema("files.delete", (
    _path(),
    Field("recursive", "bool", required=False, default=False,
          doc="delete a directory with all it contains"),
)), timeout=300.0, doc="Delete a file, a symbolic link (not its target) or a directory "
                        "(recursive: the whole tree is checked against the deny patterns "
                        "first, so a big tree takes a while)."))

MKDIR = declare(Operation("files.mkdir", "files", Schema("files.mkdir", (
    _path(),
    Field("parents", "bool", required=False, default=False,
          doc="create missing parent directories too"),
)), doc="Create a directory."))

MOVE = declare(Operation("files.move", "files", Schema("files.move", (
    _path("source"),
    _path("destination"),
    Field("overwrite", "bool", required=False, default=False,
          doc="replace an existing destination file"),
)), timeout=120.0, doc="Rename a file or directory, within one filesystem and inside "
                        "the roots (a directory's tree is checked against the deny patterns)."))

DOWNLOAD = declare(Operation("files.download", "files", Schema("files.download", (
    _path(),
    Field("size", "int", required=False, nullable=True, min=0, max=SIZE_MAX,
          doc="the size the server announced to its client: a file that is no longer "
              "this size is refused (failed), so a Content-Length is never a lie"),
)), streams=True, doc="A regular file's bytes as data frames; the result has its size "
                      "and SHA-256."))

UPLOAD = declare(Operation("files.upload", "files", Schema("files.upload", (
    _path(),
    Field("size", "int", min=0, max=SIZE_MAX, doc="the exact number of bytes that follow"),
    Field("sha256", "str", required=False, nullable=True, pattern=SHA256,
          doc="the SHA-256 of those bytes (lowercase hex); without it the server must "
              "send it in a ``digest`` signal before the end of the data"),
    Field("overwrite", "bool", required=False, default=True,
          doc="replace an existing file (else: exists)"),
    _MODE,
)), takes_input=True, doc="Receive a file's bytes into a temporary file beside the target; "
                          "rename it into place only once its size and SHA-256 match."))
