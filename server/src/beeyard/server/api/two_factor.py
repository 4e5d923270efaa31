"""Two-factor authentication with TOTP (RFC 6238) and one-time recovery codes.

Set-up is two steps so that nobody is locked out by a mistyped secret: ``setup``
stores a new secret (encrypted with a key derived from the server secret) but
leaves 2FA off; ``enable`` turns it on only after a code from that secret
proves the authenticator has it (a wrong code counts toward the sign-in lockout).
Turning 2FA off or replacing the recovery codes asks for the password (or a
code) again, through the same throttle as sign-in, so a stolen session alone
cannot do it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from beeyard.server import context
from beeyard.server.auth import passwords, tokens, totp
from beeyard.server.auth.login import account_keys, attempt, reauthenticate
from beeyard.server.auth.principal import Access
from beeyard.server.db import users
from beeyard.server.http.envelope import ApiError, ok
from beeyard.server.http.routing import route
from beeyard.shared.schema import Field, Schema

ENABLE = Schema("TwoFactorEnable", (
    Field("code", "str", min=1, max=64, doc="the current 6-digit code from the authenticator"),
))

CONFIRM = Schema("TwoFactorConfirm", (
    Field("password", "str", required=False, min=1, max=passwords.MAX_LENGTH, secret=True,
          doc="your password"),
    Field("code", "str", required=False, min=1, max=64,
          doc="instead of the password: a current 6-digit code or an unused recovery code"),
), doc="Confirm it is you: give password or code.")

_STATUS = {
    "type": "object",
    "properties": {
        "enabled": {"type": "boolean"},
        "pending": {"type": "boolean", "description": "set up but not yet enabled"},
        "recovery_codes_remaining": {"type": "integer"},
    },
}
_CODES = {
    "type": "object",
    "properties": {
        "enabled": {"type": "boolean"},
        "recovery_codes": {"type": "array", "items": {"type": "string"},
                           "description": "shown only this once; each works once"},
    },
}


async def _state(request: web.Request) -> dict[str, Any]:
    state = await users.totp_state(context.pool(request), context.principal(request).user_id)
    if state is None:  # pragma: no cover - the principal lookup joined the row a moment ago
        raise ApiError(401, "authentication required")
    return state


def _new_codes() -> tuple[list[str], list[bytes]]:
    codes = totp.new_recovery_codes()
    return codes, [tokens.digest(totp.normalise_recovery_code(c)) for c in codes]


async def _confirm(request: web.Request) -> None:
    """Ask for the password or a code again (``reauthenticate`` answers 422 if neither
    is given, or a code while 2FA is only pending)."""
    principal = context.principal(request)
    body = context.body(request)
    await reauthenticate(
        request, principal.user_id, principal.username,
        password=body["password"], code=body["code"],
    )


@route("GET", "/api/auth/2fa", Access.ACCOUNT, "two_factor.status", tags=("2fa",),
       response=_STATUS)
async def status(request: web.Request) -> web.Response:
    """Whether 2FA is on for your account, and how many recovery codes are left."""
    state = await _state(request)
    return ok({k: state[k] for k in ("enabled", "pending", "recovery_codes_remaining")})


SETUP = Schema("TwoFactorSetup", (
    Field("password", "str", min=1, max=passwords.MAX_LENGTH, secret=True,
          doc="your password: a stolen session alone must not enrol an authenticator"),
))


@route("POST", "/api/auth/2fa/setup", Access.ACCOUNT, "two_factor.setup", tags=("2fa",),
       body=SETUP, rate_limited=True, extra_statuses=(403, 409, 429),
       response={"type": "object", "properties": {
           "secret": {"type": "string", "description": "base32, for manual entry"},
           "otpauth_uri": {"type": "string", "description": "render as a QR code"},
           "enabled": {"type": "boolean"},
       }})
async def setup(request: web.Request) -> web.Response:
    """Start 2FA set-up: a new secret for your authenticator. 2FA stays off until
    ``/api/auth/2fa/enable`` confirms a code; calling this again replaces the secret.
    Asks for your password, so that whoever holds only your session cannot enrol
    an authenticator of theirs and lock you out."""
    principal = context.principal(request)
    request[context.AUDIT_TARGET] = f"user:{principal.user_id}"
    await reauthenticate(
        request, principal.user_id, principal.username,
        password=context.body(request)["password"],
    )
    secret = totp.new_secret()
    sealed = request.app[context.KEYS].seal(secret)
    if not await users.begin_totp(context.pool(request), principal.user_id, sealed):
        raise ApiError(409, "two-factor authentication is already on; turn it off first "
                            "to move to a new authenticator")
    return ok({
        "secret": secret,
        "otpauth_uri": totp.uri(secret, principal.username),
        "enabled": False,
    })


@route("POST", "/api/auth/2fa/enable", Access.ACCOUNT, "two_factor.enable", body=ENABLE,
       tags=("2fa",), rate_limited=True, extra_statuses=(403, 409, 429), response=_CODES)
async def enable(request: web.Request) -> web.Response:
    """Turn 2FA on with a code from the authenticator; returns 10 one-time recovery
    codes, shown only now. From then on, sign-in needs ``totp_code``.

    A wrong code is a 403 and counts toward the sign-in lockout, like a wrong
    code anywhere else: the set-up's secret must not be guessable by trying codes.
    """
    principal = context.principal(request)
    request[context.AUDIT_TARGET] = f"user:{principal.user_id}"
    state = await _state(request)
    if state["enabled"]:
        raise ApiError(409, "two-factor authentication is already on")
    if state["secret_enc"] is None:
        raise ApiError(409, "no 2FA set-up in progress: call POST /api/auth/2fa/setup first")
    secret = request.app[context.KEYS].open(state["secret_enc"])
    with attempt(request, account_keys(request, principal.username), "attempts") as tried:
        step = totp.matching_step(secret, context.body(request)["code"], None)
        if step is None:
            tried.failed()
            request[context.AUDIT_DETAIL] = {"reason": "bad two-factor code"}
            raise ApiError(403, "the code does not match: enter the current 6-digit code, and "
                                "check that the authenticator's clock is right")
        # Right: the reservation is given back, but the account's count is not reset
        # (a code of a new authenticator proves nothing about the password).
    codes, digests = _new_codes()
    async with context.pool(request).acquire() as conn:
        # The confirming code is marked used, so it cannot also sign in.
        done = await users.enable_totp(conn, principal.user_id, state["secret_enc"], step, digests)
    if not done:
        raise ApiError(409, "2FA set-up changed meanwhile (set up again in another window?); "
                            "start over with POST /api/auth/2fa/setup")
    return ok({"enabled": True, "recovery_codes": codes})


@route("POST", "/api/auth/2fa/disable", Access.ACCOUNT, "two_factor.disable", body=CONFIRM,
       tags=("2fa",), rate_limited=True, extra_statuses=(403, 409, 429),
       response={"type": "object", "properties": {"enabled": {"type": "boolean"}}})
async def disable(request: web.Request) -> web.Response:
    """Turn 2FA off; needs your password or a current code. Forgets the secret and
    the recovery codes."""
    principal = context.principal(request)
    request[context.AUDIT_TARGET] = f"user:{principal.user_id}"
    state = await _state(request)
    if not state["enabled"] and not state["pending"]:
        raise ApiError(409, "two-factor authentication is not on")
    await _confirm(request)
    async with context.pool(request).acquire() as conn:
        await users.disable_totp(conn, principal.user_id)
    return ok({"enabled": False})


@route("POST", "/api/auth/2fa/recovery-codes", Access.ACCOUNT, "two_factor.recovery_codes",
       body=CONFIRM, tags=("2fa",), rate_limited=True, extra_statuses=(403, 409, 429),
       response=_CODES)
async def regenerate(request: web.Request) -> web.Response:
    """Replace your recovery codes with 10 new ones (the old ones stop working);
    needs your password or a current code."""
    principal = context.principal(request)
    request[context.AUDIT_TARGET] = f"user:{principal.user_id}"
    state = await _state(request)
    if not state["enabled"]:
        raise ApiError(409, "two-factor authentication is not on")
    await _confirm(request)
    codes, digests = _new_codes()
    async with context.pool(request).acquire() as conn, conn.transaction():
        await users.replace_recovery_codes(conn, principal.user_id, digests)
    return ok({"enabled": True, "recovery_codes": codes})


ROUTES = [status, setup, enable, disable, regenerate]
