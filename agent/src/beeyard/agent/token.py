"""The run token on disk: written atomically with mode 0600, refused when others can read it.

The token is the agent's whole identity to the server. It is replaced in one
rename (see ``atomic``) both at enrollment and when the server rotates it over
the link, so a crash mid-rotation leaves either the old or the new token,
never a torn one.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from beeyard.agent.atomic import write_atomic


class TokenError(ValueError):
    """The token file is missing, unreadable, empty or readable by others."""


def write_token(path: Path, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, token.encode("ascii") + b"\n", mode=0o600)


def read_token(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TokenError(f"no token file at {path}: enroll this host first") from None
    except OSError as exc:
        raise TokenError(f"cannot read the token file {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise TokenError(
                f"the token file {path} is accessible by other users "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    token = data.decode("ascii", "replace").strip()
    if not token or any(c.isspace() for c in token) or not token.isprintable():
        raise TokenError(f"the token file {path} does not hold a token")
    return token
