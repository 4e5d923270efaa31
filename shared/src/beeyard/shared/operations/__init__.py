"""The operations the server may ask of an agent, declared once for both sides.

An operation is named ``area.verb`` (``files.list``, ``terminal.open``,
``docker.containers``); its declaration lives in the module named after the
area (``beeyard.shared.operations.files``), which is imported the first time
one of its operations is looked up, so an agent that never serves Docker never
loads its declarations.

Each declaration says which capability the operation needs and what its
arguments are. The server validates arguments before it sends a request and
refuses early when its record of the agent's capabilities lacks the one
needed; the agent validates them again and checks its *own* policy, whatever
the server says: nothing in a request can widen what the agent allows.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass

from beeyard.shared.frames import CAPABILITIES
from beeyard.shared.schema import Schema

_NAME = re.compile(r"([a-z_]+)\.([a-z_]+)")


@dataclass(frozen=True)
class Operation:
    """One operation: its name, the capability it needs, and its arguments.

    ``streams`` says the agent answers with ``data`` frames before its reply (file
    content, terminal output, log lines); ``takes_input`` that the server sends
    ``data`` into it (keys, an upload). ``timeout`` bounds a call that does neither:
    a streaming call lasts as long as its stream.
    """

    name: str
    capability: str
    args: Schema
    doc: str = ""
    streams: bool = False
    takes_input: bool = False
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.capability not in CAPABILITIES:
            raise ValueError(f"{self.name}: unknown capability {self.capability!r}")
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"operation name {self.name!r} is not area.verb")


_REGISTRY: dict[str, Operation] = {}


def declare(op: Operation) -> Operation:
    """Register an operation (from its area module); a name is declared once."""
    if op.name in _REGISTRY:
        raise ValueError(f"operation {op.name!r} declared twice")
    _REGISTRY[op.name] = op
    return op


class UnknownOperation(LookupError):
    """No such operation (a newer server asked an older agent, or a bad frame)."""


def lookup(name: str) -> Operation:
    """The declaration of ``name``, importing its area module on first use."""
    op = _REGISTRY.get(name)
    if op is not None:
        return op
    match = _NAME.fullmatch(name)
    if match is None:
        raise UnknownOperation(f"{name[:64]!r} is not an operation name")
    module = f"{__name__}.{match.group(1)}"
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # an area module that is broken: our bug, not the peer's
            raise
        raise UnknownOperation(f"unknown operation {name!r}") from None
    op = _REGISTRY.get(name)
    if op is None:
        raise UnknownOperation(f"unknown operation {name!r}")
    return op
