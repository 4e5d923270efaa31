"""TOTP two-factor authentication with real codes from pyotp: set-up, enabling,
sign-in with a code (once only), recovery codes (once only), the lockout, and
turning it off again."""

from __future__ import annotations

import hashlib
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp

from beeyard.server.auth.keys import Keys

ADMIN_PASSWORD = "correct horse battery staple"
STEP = 30


def code_at(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + offset_steps * STEP)  # type: ignore[no-any-return]


def wrong_code(secret: str) -> str:
    """A well-formed code that matches none of the steps the server accepts now."""
    valid = {code_at(secret, k) for k in (-2, -1, 0, 1, 2)}
    candidate = 0
    while f"{candidate:06d}" in valid:
        candidate += 1
    return f"{candidate:06d}"


async def turn_on(api: Any) -> tuple[str, list[str]]:
    """Set up and enable 2FA for the signed-in user; the enabling code is for the
    previous step, so the current one is still free for a sign-in."""
    status, body = await api.post("/api/auth/2fa/setup", {"password": ADMIN_PASSWORD})
    assert status == 200, body
    secret = body["data"]["secret"]
    status, body = await api.post("/api/auth/2fa/enable", {"code": code_at(secret, -1)})
    assert status == 200, body
    return secret, body["data"]["recovery_codes"]


async def sign_in(new_api: Any, **extra: Any) -> tuple[int, dict[str, Any]]:
    client = await new_api()
    result: tuple[int, dict[str, Any]] = await client.post(
        "/api/auth/login", {"username": "admin", "password": ADMIN_PASSWORD, **extra}
    )
    return result


async def test_setup_stores_the_secret_encrypted_and_leaves_2fa_off(
    api: Any, new_api: Any, db: Any, settings: Any
) -> None:
    await api.login()
    assert (await api.get("/api/auth/2fa"))[1]["data"] == {
        "enabled": False, "pending": False, "recovery_codes_remaining": 0,
    }
    status, body = await api.post("/api/auth/2fa/setup", {"password": ADMIN_PASSWORD})
    assert status == 200
    secret = body["data"]["secret"]
    uri = urlsplit(body["data"]["otpauth_uri"])
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert uri.path == "/Beeyard:admin"
    assert parse_qs(uri.query)["secret"] == [secret]
    assert body["data"]["enabled"] is False

    sealed = await db.fetchval("SELECT totp_secret_enc FROM users WHERE id = 1")
    assert secret.encode() not in sealed
    assert Keys.from_secret(settings.secret_key).open(sealed) == secret

    assert (await api.get("/api/auth/2fa"))[1]["data"]["pending"] is True
    # Not enabled yet: signing in still needs no code.
    assert (await sign_in(new_api))[0] == 200


async def test_enable_checks_the_code_and_returns_recovery_codes(api: Any, db: Any) -> None:
    await api.login()
    status, body = await api.post("/api/auth/2fa/enable", {"code": "123456"})
    assert status == 409
    assert "POST /api/auth/2fa/setup" in body["error"]

    _, body = await api.post("/api/auth/2fa/setup", {"password": ADMIN_PASSWORD})
    secret = body["data"]["secret"]
    status, body = await api.post("/api/auth/2fa/enable", {"code": wrong_code(secret)})
    assert status == 403
    assert "does not match" in body["error"]
    assert (await api.post("/api/auth/2fa/enable", {"code": "abc"}))[0] == 403

    status, body = await api.post("/api/auth/2fa/enable", {"code": code_at(secret)})
    assert status == 200, body
    codes = body["data"]["recovery_codes"]
    assert len(codes) == len(set(codes)) == 10
    stored = {r["code_digest"] for r in await db.fetch("SELECT code_digest FROM recovery_codes")}
    assert stored == {hashlib.sha256(c.replace("-", "").encode()).digest() for c in codes}
    assert (await api.get("/api/auth/2fa"))[1]["data"] == {
        "enabled": True, "pending": False, "recovery_codes_remaining": 10,
    }
    assert (await api.get("/api/auth/me"))[1]["data"]["user"]["totp_enabled"] is True
    # Already on: neither set-up nor enabling again may replace the secret.
    assert (await api.post("/api/auth/2fa/setup", {"password": ADMIN_PASSWORD}))[0] == 409
    assert (await api.post("/api/auth/2fa/enable", {"code": code_at(secret)}))[0] == 409


async def test_wrong_codes_when_enabling_count_toward_the_lockout(
    api: Any, new_api: Any
) -> None:
    """Enabling is the one 2FA route without a password; its code must not be
    guessable without limit, so wrong ones lock the account like wrong passwords."""
    await api.login()
    _, body = await api.post("/api/auth/2fa/setup", {"password": ADMIN_PASSWORD})
    secret = body["data"]["secret"]
    remaining = []
    for _ in range(5):
        async with api.client.post("/api/auth/2fa/enable", json={"code": wrong_code(secret)},
                                   headers={"X-CSRF-Token": api.csrf}) as resp:
            assert resp.status == 403, await resp.text()
            remaining.append(resp.headers["X-RateLimit-Remaining"])
    assert remaining == ["4", "3", "2", "1", "0"]
    status, body = await api.post("/api/auth/2fa/enable", {"code": code_at(secret)})
    assert status == 429, body
    assert (await sign_in(new_api))[0] == 429  # the same lockout as sign-in
    assert (await api.get("/api/auth/2fa"))[1]["data"]["enabled"] is False


async def test_sign_in_needs_a_code_that_works_once(api: Any, new_api: Any) -> None:
    await api.login()
    secret, _ = await turn_on(api)

    status, body = await sign_in(new_api)
    assert (status, body) == (401, {"error": "two-factor code required", "totp_required": True})

    code = code_at(secret)
    status, body = await sign_in(new_api, totp_code=code)
    assert status == 200, body
    assert body["data"]["user"]["totp_enabled"] is True

    # The same code again, from another client: a replay, refused.
    status, body = await sign_in(new_api, totp_code=code)
    assert (status, body) == (401, {"error": "invalid two-factor code"})
    # So is an older step's code, though it would still be within the drift allowed.
    assert (await sign_in(new_api, totp_code=code_at(secret, -1)))[0] == 401
    # A later step's code is fresh (one step of clock drift is allowed).
    status, body = await sign_in(new_api, totp_code=code_at(secret, 1))
    assert status == 200, body


async def test_the_code_that_enabled_2fa_cannot_sign_in(api: Any, new_api: Any) -> None:
    await api.login()
    _, body = await api.post("/api/auth/2fa/setup", {"password": ADMIN_PASSWORD})
    secret = body["data"]["secret"]
    code = code_at(secret)
    assert (await api.post("/api/auth/2fa/enable", {"code": code}))[0] == 200
    status, body = await sign_in(new_api, totp_code=code)
    assert (status, body) == (401, {"error": "invalid two-factor code"})
    assert (await sign_in(new_api, totp_code=code_at(secret, 1)))[0] == 200


async def test_wrong_password_with_a_right_code_is_refused(api: Any, new_api: Any) -> None:
    await api.login()
    secret, _ = await turn_on(api)
    client = await new_api()
    status, body = await client.post("/api/auth/login", {
        "username": "admin", "password": "not the password", "totp_code": code_at(secret),
    })
    assert (status, body) == (401, {"error": "invalid username or password"})


async def test_recovery_code_works_once(api: Any, new_api: Any, db: Any) -> None:
    await api.login()
    _, codes = await turn_on(api)
    typed = "  " + codes[0].upper().replace("-", " ") + " "  # read aloud, typed sloppily
    status, body = await sign_in(new_api, totp_code=typed)
    assert status == 200, body
    status, body = await sign_in(new_api, totp_code=codes[0])
    assert (status, body) == (401, {"error": "invalid two-factor code"})
    assert (await sign_in(new_api, totp_code=codes[1]))[0] == 200
    assert (await api.get("/api/auth/2fa"))[1]["data"]["recovery_codes_remaining"] == 8
    entry = await db.fetchrow(
        "SELECT detail FROM audit_logs WHERE action = 'auth.login' AND outcome = 'success' "
        "ORDER BY id DESC LIMIT 1"
    )
    assert entry["detail"]["recovery_code"] is True


async def test_wrong_codes_count_toward_the_lockout(api: Any, new_api: Any) -> None:
    await api.login()
    secret, _ = await turn_on(api)
    for _ in range(5):
        status, body = await sign_in(new_api, totp_code=wrong_code(secret))
        assert (status, body["error"]) == (401, "invalid two-factor code")
    status, body = await sign_in(new_api, totp_code=code_at(secret))
    assert status == 429
    assert "try again in" in body["error"]


async def test_disable_needs_the_password_or_a_code(api: Any, new_api: Any, db: Any) -> None:
    await api.login()
    secret, _ = await turn_on(api)
    status, body = await api.post("/api/auth/2fa/disable", {})
    assert status == 422
    assert body["error"].startswith("confirm with your password")
    status, body = await api.post("/api/auth/2fa/disable", {"password": "not the password"})
    assert (status, body) == (403, {"error": "the password is wrong"})
    status, body = await api.post("/api/auth/2fa/disable", {"code": wrong_code(secret)})
    assert (status, body) == (403, {"error": "the two-factor code is wrong or already used"})

    status, body = await api.post("/api/auth/2fa/disable", {"code": code_at(secret)})
    assert (status, body) == (200, {"data": {"enabled": False}})
    row = await db.fetchrow("SELECT totp_enabled, totp_secret_enc FROM users WHERE id = 1")
    assert (row["totp_enabled"], row["totp_secret_enc"]) == (False, None)
    assert await db.fetchval("SELECT count(*) FROM recovery_codes") == 0
    assert (await sign_in(new_api))[0] == 200
    status, body = await api.post("/api/auth/2fa/disable", {"password": ADMIN_PASSWORD})
    assert (status, body) == (409, {"error": "two-factor authentication is not on"})


async def test_disable_with_the_password(api: Any, new_api: Any) -> None:
    await api.login()
    await turn_on(api)
    status, _ = await api.post("/api/auth/2fa/disable", {"password": ADMIN_PASSWORD})
    assert status == 200
    assert (await api.get("/api/auth/2fa"))[1]["data"]["enabled"] is False
    assert (await sign_in(new_api))[0] == 200


async def test_regenerating_recovery_codes_invalidates_the_old_ones(
    api: Any, new_api: Any
) -> None:
    await api.login()
    _, old = await turn_on(api)
    assert (await api.post("/api/auth/2fa/recovery-codes", {"password": "wrong!"}))[0] == 403
    status, body = await api.post("/api/auth/2fa/recovery-codes", {"password": ADMIN_PASSWORD})
    assert status == 200, body
    new = body["data"]["recovery_codes"]
    assert len(new) == 10 and not set(new) & set(old)
    assert (await sign_in(new_api, totp_code=old[2]))[0] == 401
    assert (await sign_in(new_api, totp_code=new[2]))[0] == 200


async def test_recovery_codes_need_2fa_on(api: Any) -> None:
    await api.login()
    status, body = await api.post("/api/auth/2fa/recovery-codes", {"password": ADMIN_PASSWORD})
    assert (status, body) == (409, {"error": "two-factor authentication is not on"})


async def test_an_api_key_cannot_manage_2fa(api: Any, new_api: Any) -> None:
    await api.login()
    _, body = await api.post("/api/auth/api-keys", {"name": "ci", "scope": "full"})
    robot = await new_api()
    robot.headers = {"X-API-Key": body["data"]["key"]}
    assert (await robot.get("/api/auth/2fa"))[0] == 403
    assert (await robot.post("/api/auth/2fa/setup", {"password": ADMIN_PASSWORD}))[0] == 403
    assert (await robot.post("/api/auth/2fa/disable", {"password": ADMIN_PASSWORD}))[0] == 403


async def test_mobile_sign_in_also_needs_the_code(api: Any, new_api: Any) -> None:
    await api.login()
    secret, _ = await turn_on(api)
    phone = await new_api()
    login = {"username": "admin", "password": ADMIN_PASSWORD, "device_name": "phone"}
    status, body = await phone.post("/api/mobile/auth/login", login)
    assert (status, body.get("totp_required")) == (401, True)
    status, body = await phone.post(
        "/api/mobile/auth/login", {**login, "totp_code": code_at(secret)}
    )
    assert status == 200, body


async def test_setup_needs_the_password_and_counts_wrong_ones(api: Any) -> None:
    """A stolen session alone cannot bind an authenticator of the thief's."""
    await api.login()
    status, body = await api.post("/api/auth/2fa/setup", {})
    assert status == 422
    assert body["error"] == "password: is required"
    for _ in range(4):
        status, body = await api.post("/api/auth/2fa/setup", {"password": "not my password"})
        assert status == 403, body
    status, _ = await api.post("/api/auth/2fa/setup", {"password": "not my password"})
    assert status == 403
    status, body = await api.post("/api/auth/2fa/setup", {"password": ADMIN_PASSWORD})
    assert status == 429, body  # five wrong confirmations lock the account like sign-in
    status, body = await api.get("/api/auth/2fa")
    assert body["data"]["pending"] is False


async def test_codes_in_other_digits_are_wrong_codes_not_errors(api: Any, new_api: Any) -> None:
    """"١٢٣٤٥٦" and "１２３４５６" pass str.isdigit(); they must be refused like any wrong code."""
    await api.login()
    status, body = await api.post("/api/auth/2fa/setup", {"password": ADMIN_PASSWORD})
    assert status == 200, body
    secret = body["data"]["secret"]
    for code in ("١٢٣٤٥٦", "１２３４５６"):
        status, body = await api.post("/api/auth/2fa/enable", {"code": code})
        assert status == 403, body  # as for any wrong code
        assert "the code does not match" in body["error"]
    status, body = await api.post("/api/auth/2fa/enable", {"code": code_at(secret, -1)})
    assert status == 200, body
    for code in ("١٢٣٤٥٦", "１２３４５６"):
        status, body = await sign_in(new_api, totp_code=code)
        assert status == 401, body
