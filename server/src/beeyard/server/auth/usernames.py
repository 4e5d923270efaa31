"""What a username may be, and its one canonical form.

Usernames are ASCII on purpose: the database looks them up with SQL
``lower()``, whose result depends on the database's locale (on a UTF-8 libc
locale ``lower('ADMİN')`` is ``'admin'``), while Python's ``str.lower`` does
not. Restricted to ASCII, both agree, and the sign-in throttle, which counts
per account in Python, counts the same account the lookup finds.
"""

from __future__ import annotations

import re

MAX_LENGTH = 64
USERNAME = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_LENGTH}}}")
RULE = f"1–{MAX_LENGTH} characters from A–Z a–z 0–9 . _ -"


def canonical(name: str) -> str | None:
    """The lower-cased name, or None if ``name`` breaks the rule (no such user can exist)."""
    if not USERNAME.fullmatch(name):
        return None
    return name.lower()
