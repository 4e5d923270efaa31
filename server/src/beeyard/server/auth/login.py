"""Checking a username, password and second factor: one path for web and mobile sign-in,
and for the re-authentication that guards changes to one's own credentials.

The order is fixed so that it leaks nothing: throttle first (a locked key, or
one whose whole allowance is already being tried, is refused before any hash),
then always one password hash (unknown users and impossible usernames
included), then the second factor. Every failure counts toward the lockout, a
wrong TOTP code included.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from beeyard.server import context
from beeyard.server.auth import passwords, tokens, totp, usernames
from beeyard.server.auth.principal import Role
from beeyard.server.auth.ratelimit import Attempt, LoginLimiter, Refusal, ip_key
from beeyard.server.db import users
from beeyard.server.http.envelope import ApiError
from beeyard.shared.schema import Field

LIMITER = web.AppKey("login_limiter", LoginLimiter)

# The credential fields of every sign-in body (web and mobile), declared once. The
# username is bounded generously rather than by the username rule: a name that breaks
# the rule is answered like an unknown user (401 after a dummy hash), not with a 422.
USERNAME_FIELD = Field("username", "str", min=1, max=256,
                       doc=f"{usernames.RULE}; not case-sensitive")
PASSWORD_FIELD = Field("password", "str", min=1, max=passwords.MAX_LENGTH, secret=True)
TOTP_CODE_FIELD = Field(
    "totp_code", "str", required=False, nullable=True, max=64,
    doc="required when the account has 2FA on: the current 6-digit code, or one of the "
        "recovery codes (each works once)",
)
CREDENTIALS = (USERNAME_FIELD, PASSWORD_FIELD, TOTP_CODE_FIELD)


@dataclass(frozen=True)
class Identity:
    user_id: int
    username: str
    role: Role


def _keys(request: web.Request, canonical: str | None) -> list[str]:
    """The client address's key, then the account's (none for a name no account can
    have: there is no account to protect, and no entry is made for junk)."""
    keys = [ip_key(context.client_ip(request))]
    if canonical is not None:
        keys.append(f"user:{canonical}")
    return keys


@contextmanager
def attempt(request: web.Request, keys: list[str], what: str) -> Iterator[Attempt]:
    """Reserve an attempt on ``keys`` or raise 429; the caller settles it (``failed``,
    ``succeeded``) and whatever it leaves unsettled is given back on the way out.

    Sets the rate-limit headers either way. A refusal is written to the audit log
    only if it is the first of a key's lockout; the rest are counted by the limiter
    and summarised (``services/throttle.py``). So is "server busy" (503).
    """
    limiter = request.app[LIMITER]
    reserved = limiter.reserve(keys)
    if isinstance(reserved, Refusal):
        request[context.RATE_HEADERS] = limiter.headers(keys)
        if not reserved.first:
            request[context.AUDIT_SKIP] = True
        if reserved.locked:
            request[context.AUDIT_DETAIL] = {"reason": "locked out"}
            message = f"too many failed {what}; try again in {reserved.retry_after} seconds"
        else:
            request[context.AUDIT_DETAIL] = {"reason": "attempts in flight"}
            message = (f"too many {what} at once for this account or address; "
                       f"try again in {reserved.retry_after} seconds")
        raise ApiError(429, message, headers={"Retry-After": str(reserved.retry_after)})
    try:
        yield reserved
    except passwords.Busy:
        if not limiter.shed():
            request[context.AUDIT_SKIP] = True
        request[context.AUDIT_DETAIL] = {"reason": "server busy"}
        raise
    finally:
        reserved.release()
        request[context.RATE_HEADERS] = limiter.headers(keys)


def _failed(request: web.Request, tried: Attempt, reason: str) -> None:
    tried.failed()
    request[context.AUDIT_DETAIL] = {"reason": reason}


async def authenticate(
    request: web.Request, username: str, password: str, totp_code: str | None
) -> Identity:
    """Return who signed in, or raise 401/429 (503 when too busy to hash). Sets the
    audit actor either way."""
    request[context.AUDIT_ACTOR] = username[:200]
    canonical = usernames.canonical(username)
    keys = _keys(request, canonical)
    with attempt(request, keys, "sign-ins") as tried:
        pool = context.pool(request)
        user = None if canonical is None else await users.for_login(pool, canonical)
        matched = await passwords.verify_password(
            password, user["password_hash"] if user else None
        )
        if user is None or not matched:
            _failed(request, tried, "bad credentials")
            raise ApiError(401, "invalid username or password")
        if user["disabled"]:
            _failed(request, tried, "user disabled")
            raise ApiError(401, "invalid username or password")
        if user["totp_enabled"]:
            if not totp_code:
                request[context.AUDIT_DETAIL] = {"reason": "two-factor code required"}
                raise ApiError(401, "two-factor code required", extra={"totp_required": True})
            if not await _second_factor(request, user, totp_code):
                _failed(request, tried, "bad two-factor code")
                raise ApiError(401, "invalid two-factor code")
        tried.succeeded(keys[1:])  # the account's count resets; the IP's does not
    await users.record_login(pool, user["id"])
    return Identity(user["id"], user["username"], Role(user["role"]))


async def _second_factor(request: web.Request, user: Any, code: str) -> bool:
    """A current TOTP code (once) or an unused recovery code (once). ``user`` is the
    ``asyncpg.Record`` of ``users.for_login``/``users.credentials``."""
    pool = context.pool(request)
    secret = request.app[context.KEYS].open(user["totp_secret_enc"])
    step = totp.matching_step(secret, code, user["totp_last_step"])
    if step is not None:
        return await users.accept_totp_step(pool, user["id"], step)
    normal = totp.normalise_recovery_code(code)
    if totp.is_recovery_code(normal):
        used = await users.use_recovery_code(pool, user["id"], tokens.digest(normal))
        if used:
            request[context.AUDIT_DETAIL] = {"recovery_code": True}
        return used
    return False


def account_keys(request: web.Request, username: str) -> list[str]:
    """The throttle keys of a signed-in person's own checks (their address and account)."""
    return _keys(request, usernames.canonical(username) or username.lower())


async def reauthenticate(
    request: web.Request, user_id: int, username: str, *,
    password: str | None = None, code: str | None = None,
) -> None:
    """Confirm that a signed-in person is present, before a change a stolen session
    must not make on its own (password, 2FA): by password, or by a TOTP or recovery
    code when 2FA is on. Counted toward the same lockout as sign-in, so a session
    cannot be used to guess the password without limit. Raises 403 or 429."""
    if password is None and code is None:
        raise ApiError(422, "confirm with your password (or a two-factor code when 2FA is on)")
    keys = account_keys(request, username)
    with attempt(request, keys, "attempts") as tried:
        user = await users.credentials(context.pool(request), user_id)
        if user is None:  # deleted between the principal lookup and now
            raise ApiError(401, "authentication required")
        if password is not None:
            confirmed = await passwords.verify_password(password, user["password_hash"])
            reason, message = "wrong password", "the password is wrong"
        elif code is not None and user["totp_enabled"]:
            confirmed = await _second_factor(request, user, code)
            reason, message = "bad two-factor code", "the two-factor code is wrong or already used"
        else:
            raise ApiError(422, "confirm with your password (or a two-factor code when 2FA is on)")
        if not confirmed:
            _failed(request, tried, reason)
            raise ApiError(403, message)
        tried.succeeded(keys[1:])
