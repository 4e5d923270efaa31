"""Path and query parameters: turning text into integers without ever a 500.

Integers are written in ASCII digits only: ``int()`` also accepts "１" (fullwidth),
"١" (Arabic-Indic), "1_0" and surrounding blanks, none of which a client means as a
number it typed, and which would let two spellings name one row.
"""

from __future__ import annotations

import re

from aiohttp import web

from beeyard.server.http.envelope import ApiError

_MAX_ID = 2**63 - 1  # bigint: a larger number cannot name a row, so it is simply not found
# An optional minus and 1-30 ASCII digits: enough for any bigint, short of int()'s
# 4300-digit limit, and no "²", which str.isdigit() accepts and int() refuses.
_INTEGER = re.compile(r"-?[0-9]{1,30}")


def ascii_int(raw: str) -> int | None:
    """``raw`` as an integer if it is one written in ASCII digits, else None."""
    return int(raw) if _INTEGER.fullmatch(raw) else None


def path_id(request: web.Request, what: str, name: str = "id") -> int:
    """The ``{name}`` path segment as a row id.

    Anything that is not an integer is a 422; an integer that cannot name a row
    (zero, negative, beyond bigint) is a 404, exactly like an id that is free.
    """
    raw = request.match_info[name]
    value = ascii_int(raw)
    if value is None:
        raise ApiError(422, f"path parameter {name}: must be a positive integer, got {raw[:40]!r}")
    if not 0 < value <= _MAX_ID:
        raise ApiError(404, f"{what} {raw[:40]} not found")
    return value
