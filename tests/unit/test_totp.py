"""TOTP codes are accepted once, within one step of drift; recovery codes are well formed."""

from __future__ import annotations

import math

import pyotp

from beeyard.server.auth import totp


def test_code_matches_its_step_once() -> None:
    secret = totp.new_secret()
    now = 1_700_000_000.0
    step = int(now // 30)
    code = pyotp.TOTP(secret).at(now)
    assert totp.matching_step(secret, code, None, now) == step
    assert totp.matching_step(secret, code, step, now) is None  # replay
    assert totp.matching_step(secret, code, step - 1, now) == step


def test_drift_of_one_step_either_way_and_no_more() -> None:
    secret = totp.new_secret()
    now = 1_700_000_000.0
    t = pyotp.TOTP(secret)
    assert totp.matching_step(secret, t.at(now - 30), None, now) is not None
    assert totp.matching_step(secret, t.at(now + 30), None, now) is not None
    assert totp.matching_step(secret, t.at(now - 90), None, now) is None


def test_malformed_codes_are_refused() -> None:
    secret = totp.new_secret()
    for bad in ("", "12345", "1234567", "abcdef", "12 34 5x"):
        assert totp.matching_step(secret, bad, None) is None


def test_recovery_codes_are_unique_and_normalise() -> None:
    codes = totp.new_recovery_codes()
    assert len(set(codes)) == totp.RECOVERY_CODES
    for code in codes:
        assert len(code) == 34 and code.count("-") == 6
        assert all(len(group) == 4 for group in code.split("-"))
        normal = code.replace("-", "")
        assert totp.normalise_recovery_code(f" {code.upper()} ") == normal
        assert totp.normalise_recovery_code(code.replace("-", " \t")) == normal
        assert totp.is_recovery_code(normal)


def test_recovery_codes_carry_at_least_128_random_bits() -> None:
    """They are stored as plain SHA-256 digests, which DESIGN.md allows only for
    generated secrets of at least 128 random bits."""
    alphabet = set(totp.RECOVERY_ALPHABET)
    assert len(alphabet) == len(totp.RECOVERY_ALPHABET) == 31
    assert not alphabet & set("01ilo")  # no look-alikes
    assert totp.RECOVERY_CODE_LENGTH * math.log2(len(alphabet)) >= 128
    for code in totp.new_recovery_codes():
        assert set(totp.normalise_recovery_code(code)) <= alphabet


def test_only_well_formed_recovery_codes_are_looked_up() -> None:
    good = totp.normalise_recovery_code(totp.new_recovery_codes()[0])
    assert totp.is_recovery_code(good)
    for bad in (good[:-1], good + "a", good[:-1] + "0", good[:-1] + "é", "", "abcd" * 4):
        assert not totp.is_recovery_code(bad)


def test_uri_names_issuer_and_user() -> None:
    uri = totp.uri(totp.new_secret(), "alice")
    assert uri.startswith("otpauth://totp/Beeyard:alice?")
    assert "issuer=Beeyard" in uri


def test_codes_of_other_digits_are_refused_not_a_crash() -> None:
    """str.isdigit() accepts Arabic-Indic and fullwidth digits, which hmac.compare_digest
    refuses to compare: only the ASCII digits 0-9 make a code."""
    secret = totp.new_secret()
    for bad in ("١٢٣٤٥٦", "１２３４５６", "12345６", "²²²²²²", "123\u00a0456", "12345\u0000"):
        assert totp.matching_step(secret, bad, None) is None
    now = 1_700_000_000.0
    code = pyotp.TOTP(secret).at(now)
    assert totp.matching_step(secret, f" {code[:3]} {code[3:]} ", None, now) is not None
