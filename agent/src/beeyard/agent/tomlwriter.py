"""Write the little TOML the agent's config needs: no dependency for ~40 lines.

The standard library reads TOML (``tomllib``) but cannot write it. The config
holds only strings, integers, floats, booleans, lists of those, and one level
of tables, so this writer covers exactly that and refuses anything else, and
its output is checked by reading it back with ``tomllib`` in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def _string(value: str) -> str:
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def value(v: Any) -> str:
    """One TOML value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError("TOML config values must be finite numbers")
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(item) for item in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as a TOML value")


def _key(k: str) -> str:
    bare = k and all(c.isascii() and (c.isalnum() or c in "-_") for c in k)
    return k if bare else _string(k)


def dumps(data: Mapping[str, Any], comments: Mapping[str, str] | None = None) -> str:
    """Top-level keys first, then one ``[table]`` per nested mapping. ``comments``
    maps a key (``"spool.dir"`` for a table's) to a line written above it."""
    comments = comments or {}
    lines: list[str] = []

    def emit(prefix: str, items: Mapping[str, Any]) -> None:
        for k, v in items.items():
            if isinstance(v, Mapping):
                continue
            note = comments.get(prefix + k)
            if note:
                lines.append(f"# {note}")
            lines.append(f"{_key(k)} = {value(v)}")

    emit("", data)
    for k, v in data.items():
        if isinstance(v, Mapping):
            if any(isinstance(inner, Mapping) for inner in v.values()):
                raise TypeError("only one level of tables is supported")
            lines.append("")
            lines.append(f"[{_key(k)}]")
            emit(f"{k}.", v)
    return "\n".join(lines) + "\n"
