"""Path parameters: turning ``{id}`` segments into database ids without ever a 500."""

from __future__ import annotations

import re

from aiohttp import web

from beeyard.server.http.envelope import ApiError

_MAX_ID = 2**63 - 1  # bigint: a larger number cannot name a row, so it is simply not found
# ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
_DIGITS = re.compile(r"[0-9]{1,30}")


def path_id(request: web.Request, what: str, name: str = "id") -> int:
    """The ``{name}`` path segment as a positive id; junk is a 422, a too-large number a 404."""
    raw = request.match_info[name]
    if not _DIGITS.fullmatch(raw):
        raise ApiError(422, f"path parameter {name}: must be a positive integer, got {raw[:40]!r}")
    value = int(raw)
    if not 0 < value <= _MAX_ID:
        raise ApiError(404, f"{what} {raw[:40]} not found")
    return value
