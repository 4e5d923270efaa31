"""Time-based one-time codes (RFC 6238, via pyotp) and single-use recovery codes.

A code is accepted at most once: the caller stores the accepted time step and
passes it back, and only later steps are accepted. One step of clock drift is
tolerated either way.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time

import pyotp

ISSUER = "Beeyard"
STEP = 30
RECOVERY_CODES = 10
_CODE = re.compile(r"[0-9]{6}")


def new_secret() -> str:
    return pyotp.random_base32(32)  # 160 bits


def uri(secret: str, username: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def matching_step(
    secret: str, code: str, last_step: int | None, now: float | None = None
) -> int | None:
    """The time step ``code`` belongs to, if it is valid and newer than ``last_step``.

    Only the ASCII digits make a code: ``str.isdigit()`` also accepts "١٢٣٤٥٦" and
    "１２３４５６", which ``hmac.compare_digest`` refuses to compare (a 500, not a no).
    """
    code = code.strip().replace(" ", "")
    if not _CODE.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret)
    current = int((time.time() if now is None else now) // STEP)
    for step in (current - 1, current, current + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.at(step * STEP), code):
            return step
    return None


# No look-alikes (0/o, 1/l/i): 31 symbols, log2(31) ≈ 4.95 bits each.
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
# A recovery code is a generated secret stored as a plain SHA-256 digest, so it must
# carry at least 128 random bits (DESIGN.md): 28 symbols ≈ 138.7 bits, typed as seven
# groups of four.
RECOVERY_CODE_LENGTH = 28
_GROUP = 4
_SEPARATORS = re.compile(r"[\s\-]+")


def new_recovery_codes() -> list[str]:
    """Ten codes of ≈139 random bits each, grouped for reading aloud:
    ``abcd-efgh-jkmn-pqrs-tuvw-xyz2-3456``."""
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH))
        codes.append("-".join(raw[i:i + _GROUP] for i in range(0, RECOVERY_CODE_LENGTH, _GROUP)))
    return codes


def normalise_recovery_code(code: str) -> str:
    """The code as stored (its digest): lower case, without the dashes and any
    whitespace a person may type between the groups."""
    return _SEPARATORS.sub("", code).lower()


def is_recovery_code(normal: str) -> bool:
    """Whether a normalised code could be one we issued; anything else is not looked up."""
    return len(normal) == RECOVERY_CODE_LENGTH and all(c in RECOVERY_ALPHABET for c in normal)
