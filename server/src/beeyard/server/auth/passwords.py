"""Human-chosen passwords: the policy they must meet and how they are hashed.

scrypt (in the standard library through OpenSSL) is memory-hard: each hash
needs 16 MiB, which makes GPU guessing expensive. It runs in a worker thread so
the event loop keeps serving while a login hashes, and at most ``_PARALLEL``
hashes run at once so a burst of logins cannot exhaust memory.
Unknown users are checked against a dummy hash, so a wrong username takes as
long as a wrong password.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import threading

_N, _R, _P = 2**14, 8, 1  # 16 MiB, ~50 ms on one core here
_LEN = 32
_PARALLEL = threading.BoundedSemaphore(4)  # held in the worker thread, loop-agnostic

MIN_LENGTH = 10
MAX_LENGTH = 1024


class PolicyError(ValueError):
    """The password does not meet the policy; the message says which rule."""


def check_policy(password: str, username: str | None = None) -> None:
    """At least 10 characters (a passphrase of several words qualifies easily),
    at most 1024, not the username, and not one character repeated."""
    if len(password) < MIN_LENGTH:
        raise PolicyError(f"password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PolicyError(f"password must have at most {MAX_LENGTH} characters")
    if username and password.strip().lower() == username.strip().lower():
        raise PolicyError("password must not be the username")
    if len(set(password)) < 3:
        raise PolicyError("password must use more than two distinct characters")


def _hash_sync(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    with _PARALLEL:
        return hashlib.scrypt(
            password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p,
            maxmem=2 * 128 * n * r * p, dklen=_LEN,
        )


def _encode(salt: bytes, key: bytes, n: int = _N, r: int = _R, p: int = _P) -> str:
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(key).decode()}"


def hash_sync(password: str) -> str:
    salt = os.urandom(16)
    return _encode(salt, _hash_sync(password, salt, _N, _R, _P))


def verify_sync(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, key = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        actual = _hash_sync(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# Verified when the username is unknown, so that case costs the same time.
DUMMY_HASH = _encode(b"\0" * 16, b"\0" * _LEN)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(hash_sync, password)


async def verify_password(password: str, encoded: str | None) -> bool:
    """Always pays for one hash, so an unknown user (``encoded`` None) is not faster."""
    matched = await asyncio.to_thread(verify_sync, password, encoded or DUMMY_HASH)
    return matched and encoded is not None
