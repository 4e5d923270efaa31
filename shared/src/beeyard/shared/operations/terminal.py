"""The web terminal: one operation, ``terminal.open``, a shell on a PTY.

The call lasts as long as the session. The agent streams the terminal's output as
``data`` frames; the server sends keystrokes as ``data`` the other way, and a
``signal`` named ``resize`` (args as ``RESIZE``) when the browser's window changes.
The reply ends it, with the shell's exit status, byte counts and duration; a
``cancel`` (the browser or the server went away) kills the session's processes.
"""

from __future__ import annotations

from beeyard.shared.operations import Operation, declare
from beeyard.shared.schema import Field, Schema

MAX_COLS = 1000
MAX_ROWS = 1000
TERM_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}"


def _size_fields(required: bool) -> tuple[Field, Field]:
    return (
        Field("cols", "int", required=required, min=1, max=MAX_COLS, default=None if required
              else 80, doc="columns of the terminal"),
        Field("rows", "int", required=required, min=1, max=MAX_ROWS, default=None if required
              else 24, doc="rows of the terminal"),
    )


OPEN_ARGS = Schema("terminal.open", (
    *_size_fields(required=False),
    Field("term", "str", required=False, default="xterm-256color", pattern=TERM_PATTERN,
          doc="the TERM the shell sees (xterm.js speaks xterm-256color)"),
), doc="open a shell on a PTY of this size")

RESIZE = Schema("terminal.resize", _size_fields(required=True),
                doc="args of the resize signal: the terminal's new size")

OPEN = declare(Operation(
    name="terminal.open",
    capability="terminal",
    args=OPEN_ARGS,
    doc="a shell on a PTY, as the agent's configured user; output streams, keys are input",
    streams=True,
    takes_input=True,
))
