"""Checking a username, password and second factor: one path for web and mobile sign-in.

The order is fixed so that it leaks nothing: throttle first (a locked key is
refused before any hash), then always one password hash (unknown users included),
then the second factor. Every failure counts toward the lockout, a wrong TOTP
code included.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from beeyard.server import context
from beeyard.server.auth import passwords, tokens, totp
from beeyard.server.auth.principal import Role
from beeyard.server.auth.ratelimit import LoginLimiter
from beeyard.server.db import users
from beeyard.server.http.envelope import ApiError

LIMITER = web.AppKey("login_limiter", LoginLimiter)


@dataclass(frozen=True)
class Identity:
    user_id: int
    username: str
    role: Role


def _keys(request: web.Request, username: str) -> list[str]:
    return [f"ip:{context.client_ip(request)}", f"user:{username.strip().lower()}"]


async def authenticate(
    request: web.Request, username: str, password: str, totp_code: str | None
) -> Identity:
    """Return who signed in, or raise 401/429. Sets the audit actor either way."""
    limiter = request.app[LIMITER]
    keys = _keys(request, username)
    request[context.AUDIT_ACTOR] = username[:200]
    wait = limiter.retry_after(keys)
    if wait:
        request[context.RATE_HEADERS] = limiter.headers(keys)
        request[context.AUDIT_DETAIL] = {"reason": "locked out"}
        raise ApiError(
            429, f"too many failed sign-ins; try again in {wait} seconds",
            headers={"Retry-After": str(wait)},
        )
    pool = context.pool(request)
    user = await users.for_login(pool, username)
    matched = await passwords.verify_password(password, user["password_hash"] if user else None)

    def fail(message: str, reason: str) -> ApiError:
        limiter.fail(keys)
        request[context.RATE_HEADERS] = limiter.headers(keys)
        request[context.AUDIT_DETAIL] = {"reason": reason}
        return ApiError(401, message)

    if user is None or not matched:
        raise fail("invalid username or password", "bad credentials")
    if user["disabled"]:
        raise fail("invalid username or password", "user disabled")
    if user["totp_enabled"]:
        if not totp_code:
            request[context.RATE_HEADERS] = limiter.headers(keys)
            request[context.AUDIT_DETAIL] = {"reason": "two-factor code required"}
            raise ApiError(401, "two-factor code required", extra={"totp_required": True})
        if not await _second_factor(request, user, totp_code):
            raise fail("invalid two-factor code", "bad two-factor code")
    limiter.succeed(keys[1:])  # the account's count resets; the IP's does not
    request[context.RATE_HEADERS] = limiter.headers(keys)
    await users.record_login(pool, user["id"])
    return Identity(user["id"], user["username"], Role(user["role"]))


async def _second_factor(request: web.Request, user: object, code: str) -> bool:
    """A current TOTP code (once) or an unused recovery code (once)."""
    pool = context.pool(request)
    row = user  # asyncpg.Record
    secret = request.app[context.KEYS].open(row["totp_secret_enc"])  # type: ignore[index]
    step = totp.matching_step(secret, code, row["totp_last_step"])  # type: ignore[index]
    if step is not None:
        return await users.accept_totp_step(pool, row["id"], step)  # type: ignore[index]
    normal = totp.normalise_recovery_code(code)
    if len(normal) == 16:
        used = await users.use_recovery_code(pool, row["id"], tokens.digest(normal))  # type: ignore[index]
        if used:
            request[context.AUDIT_DETAIL] = {"recovery_code": True}
        return used
    return False


async def reauthenticate(
    request: web.Request, user_id: int, username: str, *,
    password: str | None = None, code: str | None = None,
) -> None:
    """Confirm that a signed-in person is present, before a change a stolen session
    must not make on its own (password, 2FA): by password, or by a TOTP or recovery
    code when 2FA is on. Counted toward the same lockout as sign-in, so a session
    cannot be used to guess the password without limit. Raises 403 or 429."""
    limiter = request.app[LIMITER]
    keys = _keys(request, username)
    wait = limiter.retry_after(keys)
    if wait:
        request[context.RATE_HEADERS] = limiter.headers(keys)
        request[context.AUDIT_DETAIL] = {"reason": "locked out"}
        raise ApiError(
            429, f"too many failed attempts; try again in {wait} seconds",
            headers={"Retry-After": str(wait)},
        )
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
        limiter.fail(keys)
        request[context.RATE_HEADERS] = limiter.headers(keys)
        request[context.AUDIT_DETAIL] = {"reason": reason}
        raise ApiError(403, message)
    limiter.succeed(keys[1:])
    request[context.RATE_HEADERS] = limiter.headers(keys)
