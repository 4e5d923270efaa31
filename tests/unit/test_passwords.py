"""Password policy and the memory-hard hash."""

from __future__ import annotations

import pytest

from beeyard.server.auth import passwords


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "at least 10"),
        ("x" * 1025, "at most 1024"),
        ("Administrator", "must not be the username"),
        ("abababababab", "more than two distinct"),
    ],
)
def test_policy_names_the_rule(password: str, message: str) -> None:
    with pytest.raises(passwords.PolicyError, match=message):
        passwords.check_policy(password, "administrator")


def test_policy_accepts_a_passphrase() -> None:
    passwords.check_policy("correct horse battery staple", "admin")


def test_hash_verifies_and_salts() -> None:
    a = passwords.hash_sync("correct horse battery staple")
    b = passwords.hash_sync("correct horse battery staple")
    assert a != b and a.startswith("scrypt$16384$8$1$")
    assert passwords.verify_sync("correct horse battery staple", a)
    assert not passwords.verify_sync("correct horse battery stapl", a)
    assert not passwords.verify_sync("x", "garbage")
    assert not passwords.verify_sync("x", "bcrypt$1$2$3$4$5")


async def test_unknown_user_pays_for_one_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = passwords._hash_sync

    def counting(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
        calls.append(password)
        return real(password, salt, n, r, p)

    monkeypatch.setattr(passwords, "_hash_sync", counting)
    assert await passwords.verify_password("guess-guess", None) is False
    assert calls == ["guess-guess"]
    # the dummy hash has the same cost parameters as a real one
    assert passwords.DUMMY_HASH.split("$")[1:4] == passwords.hash_sync("x" * 10).split("$")[1:4]
