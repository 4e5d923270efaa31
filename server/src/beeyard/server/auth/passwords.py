"""Human-chosen passwords: the policy they must meet and how they are hashed.

scrypt (in the standard library through OpenSSL) is memory-hard: each hash
needs 16 MiB, which makes GPU guessing expensive. Hashes run on a small pool of
threads of their own (``WORKERS``), never on the event loop and never on the
loop's default executor: that one also serves static files (aiohttp's
``FileResponse``) and DNS look-ups, which a flood of sign-ins must not starve.
The pool's size bounds the memory that hashing can take. At most
``MAX_WAITING`` hashes may wait for it; beyond that a hash is refused at once
with ``Busy`` (503 with ``Retry-After``), so a flood gets fast refusals instead
of an ever longer queue that every legitimate sign-in would wait behind.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from beeyard.server.http.envelope import ApiError

_N, _R, _P = 2**14, 8, 1  # 16 MiB, ~50 ms on one core here
_LEN = 32

WORKERS = max(2, min(4, os.cpu_count() or 1))
MAX_WAITING = 64

_T = TypeVar("_T")
_executor: ThreadPoolExecutor | None = None
_admitted = 0  # hashes running or waiting for a worker
_admitted_lock = threading.Lock()  # callers may be on different event loops (tests, CLI)


class Busy(ApiError):
    """Too many hashes are running and waiting already: refuse instead of queueing."""

    def __init__(self) -> None:
        super().__init__(503, "server busy, retry in a moment", headers={"Retry-After": "1"})


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


def _pool() -> ThreadPoolExecutor:
    """The hashing threads, created on first use; the threads themselves start only
    as hashes need them and are joined at interpreter exit."""
    global _executor
    with _admitted_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="beeyard-hash")
        return _executor


async def _run(fn: Callable[..., _T], *args: object) -> _T:
    """Run ``fn`` on the hashing pool, or raise ``Busy`` if its queue is full."""
    global _admitted
    with _admitted_lock:
        if _admitted >= WORKERS + MAX_WAITING:
            raise Busy
        _admitted += 1
    try:
        job = _pool().submit(fn, *args)
    except BaseException:
        _leave(None)
        raise
    # Counted out when the job is done, not when the caller stops waiting: a
    # cancelled request's hash that already started still holds its thread.
    job.add_done_callback(_leave)
    return await asyncio.wrap_future(job)


def _leave(_job: object) -> None:
    global _admitted
    with _admitted_lock:
        _admitted -= 1


async def hash_password(password: str) -> str:
    """Raises ``Busy`` when the hashing queue is full."""
    return await _run(hash_sync, password)


async def verify_password(password: str, encoded: str | None) -> bool:
    """Always pays for one hash, so an unknown user (``encoded`` None) is not faster.
    Raises ``Busy`` when the hashing queue is full, for known and unknown users alike."""
    matched = await _run(verify_sync, password, encoded or DUMMY_HASH)
    return matched and encoded is not None
