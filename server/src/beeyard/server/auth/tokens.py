"""Secrets we generate: how they look, and how they are stored.

Every generated secret carries ≥ 256 random bits, so a plain SHA-256 digest
is as safe at rest as a slow KDF and can be found in one indexed lookup; only
human-chosen passwords need ``passwords.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_KEY_PREFIX = "beeyard_"
ACCESS_TOKEN_PREFIX = "bya_"  # noqa: S105 - a prefix, not a secret
REFRESH_TOKEN_PREFIX = "byr_"  # noqa: S105
AGENT_TOKEN_PREFIX = "bag_"  # noqa: S105 - an agent's run token (256 bits after the prefix)


def new_secret(prefix: str = "") -> tuple[str, bytes]:
    """A fresh secret (shown once to its owner) and the digest we keep."""
    token = prefix + secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> bytes:
    return hashlib.sha256(_bytes(token)).digest()


def same(a: str, b: str) -> bool:
    """Constant-time equality that never raises: a header of invalid UTF-8 reaches us as
    lone surrogates, which a plain ``encode()`` refuses, so encode them through."""
    return hmac.compare_digest(_bytes(a), _bytes(b))


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")
