"""Commands (the ``exec`` capability): run one command and stream its output.

A command is an ``argv`` list, run as is with no shell between it and the
kernel, or a ``shell`` line for ``/bin/sh -c``, which the agent allows only
when its own config says ``exec.allow_shell = true``. Exactly one of the two.
The agent caps the timeout and the output at its ``[exec]`` limits whatever
the request asks: the request can only ask for less.
"""

from __future__ import annotations

from beeyard.shared.operations import Operation, declare
from beeyard.shared.schema import Field, Schema

MAX_ARGV = 256  # arguments in one command
MAX_ARG = 4096  # characters in one argument
MAX_SHELL = 16 * 1024  # characters in a shell line
MAX_ENV = 32  # extra environment variables
MAX_ENV_VALUE = 4096
ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
MAX_TIMEOUT = 7 * 24 * 3600  # the wire's bound; the agent's exec.max_timeout is lower

RUN_ARGS = Schema("exec.run", (
    Field("argv", "list", required=False, nullable=True, min=1, max=MAX_ARGV,
          items=Field("arg", "str", max=MAX_ARG),
          doc="the program and its arguments, run without a shell"),
    Field("shell", "str", required=False, nullable=True, min=1, max=MAX_SHELL,
          doc="a line for /bin/sh -c (only where the agent sets exec.allow_shell)"),
    Field("timeout", "int", required=False, nullable=True, min=1, max=MAX_TIMEOUT,
          doc="seconds before the command's process group is killed (capped by the agent)"),
    Field("cwd", "str", required=False, nullable=True, min=1, max=4096,
          doc="working directory (default: the user's home, else /)"),
    Field("env", "map", required=False, nullable=True, max=MAX_ENV,
          doc="extra environment variables, names to string values"),
    Field("max_output", "int", required=False, nullable=True, min=1, max=64 * 1024 * 1024,
          doc="bytes of output to send at most (capped by the agent)"),
))

RUN = declare(Operation(
    "exec.run", "exec", RUN_ARGS, streams=True,
    doc="Run one command; its stdout and stderr, merged, stream back as data; the reply "
        "has exit_code, signal, duration, bytes, truncated and timed_out.",
))
